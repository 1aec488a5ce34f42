-- sql/upgrade/0.1--0.2/74_citus_move.sql: adding a worker and moving a site on Citus (test/t/222_citus_identity_move.pl): ids in blocks of 2^48, prepay.move_site() (the target draws from a block above every id drawn so far, so a site's ids keep increasing), prepay.distribute() again after citus_add_node (the schema changes on the new workers with DDL propagation off there, every worker on a fresh id block, the reference tables copied).

-- ids in blocks of 2^48: a node draws each bigint id from a block of its
-- own (at first its group id's, prepay._prepare_distribution); a block
-- above every id drawn so far is what keeps a site's ids increasing when
-- its shards move to another node (prepay.move_site)
--@ copy function prepay._max_id_block
--@ copy function prepay._id_block_at_least
--@ copy function prepay._cluster_id_block
--@ copy function prepay.move_site

--@ copy function prepay._prepare_distribution
--@ copy function prepay.distribute
