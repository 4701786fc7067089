-- GET /conversations/{peer}/messages?before=: 50 messages, 10,000 back in a long conversation.
require("common").use(require("common").get_conversation_back)
