-- Password guessing spread over many addresses (chatsvc/login_throttle.py): the logins of one
-- account (or, for a name no account has, of that name) in the current window. A login counts
-- from the moment it starts and is taken back when it succeeds, so that concurrent guesses count
-- too. Shared by every replica; rows whose window has passed are deleted in the background.
CREATE TABLE login_failures (
    -- "#<user id>" for an account, "=<login key>" for a name no account has.
    account      text        PRIMARY KEY,
    failures     integer     NOT NULL,
    window_start timestamptz NOT NULL
);

CREATE INDEX login_failures_window_start ON login_failures (window_start);
