-- POST /messages: a random user sends a text to a random recipient.
require("common").use(require("common").post_message)
