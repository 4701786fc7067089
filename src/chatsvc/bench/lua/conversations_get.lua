-- GET /conversations: a user in 1,000 conversations reads the newest page of 50.
require("common").use(require("common").get_conversations)
