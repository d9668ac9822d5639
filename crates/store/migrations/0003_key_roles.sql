-- Roles of API keys (user, admin, auditor, break_glass), as a JSON array in canonical order.
-- Keys made before roles existed could only call models, so they become `user` keys.
ALTER TABLE api_keys ADD COLUMN roles TEXT NOT NULL DEFAULT '["user"]';
