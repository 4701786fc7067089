-- Real-time delivery (GET /messages/stream): a caller's stream carries the messages addressed to
-- them and the ones they sent, replayed from the database and then woken by LISTEN/NOTIFY.

-- What one user sent, in id order: with messages_recipient_id, the stream's replay is two range
-- scans merged by id, whatever the size of the table.
CREATE INDEX messages_sender_id ON messages (sender_id, id);

-- A message id is taken only once its transaction has an xid. A stream delivers an id only when
-- every transaction that was in progress when it saw that id has ended (pg_current_snapshot), so
-- that no smaller id can still commit after it: ids from a sequence commit out of order, and a
-- client resuming from `Last-Event-ID` must never skip one. That reasoning needs every transaction
-- holding an id to be listed in the snapshot, hence the xid first. The identity column becomes a
-- plain sequence default, continuing where the identity stopped.
CREATE FUNCTION chatsvc_next_message_id() RETURNS bigint
LANGUAGE plpgsql VOLATILE AS $$
BEGIN
    PERFORM pg_current_xact_id();
    RETURN nextval('messages_id_seq');
END
$$;

DO $$
DECLARE
    next_id bigint := coalesce(pg_sequence_last_value(pg_get_serial_sequence('messages', 'id')), 0) + 1;
BEGIN
    ALTER TABLE messages ALTER COLUMN id DROP IDENTITY;
    CREATE SEQUENCE messages_id_seq AS bigint OWNED BY messages.id;
    PERFORM setval('messages_id_seq', greatest(next_id, (SELECT coalesce(max(id), 0) + 1 FROM messages)),
                   false);
    ALTER TABLE messages ALTER COLUMN id SET DEFAULT chatsvc_next_message_id();
END
$$;

-- One notification per INSERT statement, sent at commit: "id:sender:recipient" for each row, so
-- each process wakes only the streams concerned. The payload stays far below PostgreSQL's 8000
-- bytes: a statement of more than 100 rows (a bulk load) sends "*" instead, and every stream looks.
CREATE FUNCTION chatsvc_notify_messages() RETURNS trigger
LANGUAGE plpgsql AS $$
DECLARE
    payload text;
BEGIN
    IF (SELECT count(*) > 100 FROM inserted) THEN
        payload := '*';
    ELSE
        SELECT string_agg(id || ':' || sender_id || ':' || recipient_id, ' ' ORDER BY id)
        INTO payload FROM inserted;
    END IF;
    IF payload IS NOT NULL THEN
        PERFORM pg_notify('chatsvc_messages', payload);
    END IF;
    RETURN NULL;
END
$$;

CREATE TRIGGER messages_notify AFTER INSERT ON messages
    REFERENCING NEW TABLE AS inserted
    FOR EACH STATEMENT EXECUTE FUNCTION chatsvc_notify_messages();
