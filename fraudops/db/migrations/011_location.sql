-- Where a payment came from: the IP address's country and kind (public, private, reserved,
-- unknown), the card's issuing and the billing country, and a keyed hash of the address
-- (HMAC, fraudops.geoip.ip_hash) so the console can group payments by address. The address
-- itself is personal data and is never stored. NULL is unknown ('' on the wire).
ALTER TABLE scored_transactions
    ADD COLUMN IF NOT EXISTS ip_country      TEXT,
    ADD COLUMN IF NOT EXISTS ip_kind         TEXT,
    ADD COLUMN IF NOT EXISTS card_country    TEXT,
    ADD COLUMN IF NOT EXISTS billing_country TEXT,
    ADD COLUMN IF NOT EXISTS ip_hash         TEXT;

-- The console's "this user's countries" and "payments from this address".
CREATE INDEX IF NOT EXISTS scored_transactions_ip_hash
    ON scored_transactions (ip_hash) WHERE ip_hash IS NOT NULL;
