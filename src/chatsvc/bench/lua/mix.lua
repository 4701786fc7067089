-- 90% GET /messages (a page of 100), 10% POST /messages.
local common = require("common")
common.use(function()
  if math.random() < 0.9 then
    return common.get_messages()
  end
  return common.post_message()
end)
