-- A list change may also be a reset: every scoring process reads that list anew from
-- rule_list_items (or drops it when it no longer exists). Written when a list is created or
-- deleted, and when the single IP addresses an IP list kept as given are replaced by their
-- keyed hash (fraudops.rule_sets.hash_stored_addresses, run by a writer holding the key:
-- the key is not in the database, so this migration cannot hash them itself).
ALTER TABLE rule_list_changes
    DROP CONSTRAINT rule_list_changes_op_check,
    ADD CONSTRAINT rule_list_changes_op_check CHECK (op IN ('add', 'remove', 'reset'));
