-- GET /messages: a random user reads the first page (100) of their own inbox of mixed types.
require("common").use(require("common").get_messages)
