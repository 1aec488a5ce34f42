-- sql/upgrade/0.1--0.2/73_citus_identity.sql: the tenant's reads on Citus (test/t/222_citus_identity_move.pl): my_charges, my_payments and my_bills read account by account, each statement filtered by the account's site (Citus pushes no LIMIT per account down otherwise).

--@ copy function prepay.my_charges
--@ copy function prepay.my_payments
--@ copy function prepay.my_bills
