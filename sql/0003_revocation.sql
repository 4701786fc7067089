-- Revocation reaches open streams at once (chatsvc/revocation.py): whatever ends sessions (a
-- DELETE, or an UPDATE that moves expires_at earlier) sends one notification at commit, naming
-- the users concerned, so that every replica ends those sessions' streams without waiting for
-- its periodic re-check. More than 100 users in one statement (a bulk cleanup) sends "*" instead,
-- which keeps the payload far below PostgreSQL's 8000 bytes.
CREATE FUNCTION chatsvc_notify_revoked() RETURNS trigger
LANGUAGE plpgsql AS $$
DECLARE
    payload text;
BEGIN
    IF (SELECT count(DISTINCT user_id) > 100 FROM changed) THEN
        payload := '*';
    ELSE
        SELECT string_agg(DISTINCT user_id::text, ' ') INTO payload FROM changed;
    END IF;
    IF payload IS NOT NULL THEN
        PERFORM pg_notify('chatsvc_revoked', payload);
    END IF;
    RETURN NULL;
END
$$;

CREATE TRIGGER sessions_notify_deleted AFTER DELETE ON sessions
    REFERENCING OLD TABLE AS changed
    FOR EACH STATEMENT EXECUTE FUNCTION chatsvc_notify_revoked();

-- Shortening a session's life is revoking it too. Row by row, as a column list allows no transition
-- table; PostgreSQL folds identical notifications of one transaction into one.
CREATE FUNCTION chatsvc_notify_shortened() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('chatsvc_revoked', NEW.user_id::text);
    RETURN NULL;
END
$$;

CREATE TRIGGER sessions_notify_shortened AFTER UPDATE OF expires_at ON sessions
    FOR EACH ROW WHEN (NEW.expires_at < OLD.expires_at)
    EXECUTE FUNCTION chatsvc_notify_shortened();
