-- GET /conversations/{peer}/messages: the newest 50 messages of a long conversation.
require("common").use(require("common").get_conversation_newest)
