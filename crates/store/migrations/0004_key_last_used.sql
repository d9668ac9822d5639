-- When a key was last used (unix seconds; updated at most about once a minute per key), for the
-- idle timeout of long-lived keys (automatic logoff, 164.312(a)(2)(iii)).
ALTER TABLE api_keys ADD COLUMN last_used_at BIGINT;
