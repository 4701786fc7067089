-- POST /login: a random user logs in with the right password (argon2id at production parameters).
require("common").use(require("common").login)
