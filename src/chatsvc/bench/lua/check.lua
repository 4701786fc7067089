-- GET /check: the readiness probe, answered from memory.
require("common").use(require("common").check)
