
/*-------------------------------------------------------------------------
 * sql/security.sql
 *     Least privilege for prepay: the roles, the mapping of logins to
 *     sites, accounts and agents, the authorization helpers every
 *     SECURITY DEFINER function calls, row-level security by site, the
 *     append-only audit trail, and the grants.  Appended last into
 *     prepay--<version>.sql, so its generic part (the loops at the end)
 *     covers the tables, views and functions of every earlier file.
 *     docs/SECURITY.md explains the model and what a new file must do.
 *
 * Vocabulary
 *     caller      the role a call acts for: the session user, or the role
 *                 it switched to with SET ROLE (prepay._caller(), C).
 *                 SECURITY DEFINER functions do not change it.
 *     capability  what a public function needs: manage, relay, money,
 *                 read, administer (prepay._capability_roles lists the
 *                 roles that have each one), and the agent's own.
 *     mapping     prepay.site_access (staff logins or group roles to
 *                 sites), prepay.tenant_access (tenant logins to
 *                 accounts), prepay.agent_access (agent logins to an
 *                 agent id at a site).  A row names a role; its members
 *                 are mapped too, so a group role is a site group.
 *                 Mappings follow the caller too (prepay._mapping_role):
 *                 the role an authenticator switched to has that role's
 *                 mappings, not the authenticator's.  Only a login that
 *                 switches to one of the six prepay_* group roles keeps
 *                 its own mappings (SET ROLE narrows what, not where).
 *     authenticator  a login a pooler or REST gateway connects as and
 *                 switches roles from (prepay.api_authenticator); the
 *                 claims it passes in request.jwt.claims name a tenant's
 *                 account, and nobody else's claims are trusted.
 *
 * The model in one paragraph: GRANTs decide what kind of object a role
 * may touch; row-level security (FORCE'd, on every table with a site_id)
 * decides which sites' (or which accounts') rows; SECURITY DEFINER
 * functions, with a pinned search_path, are the only way to move money or
 * queue relay commands, and each one starts with prepay._authorize*.
 * Superusers bypass all of it.
 *
 * Errors raised here: 42501 (permission denied, with the role and what
 * is missing), 42704 (mapping of a role that does not exist), PY201
 * (the audit trail is append-only), PY202 (a prepay_* role exists with
 * superuser or bypassrls), PY203 (an authenticator passed claims that are
 * not a JSON object with integer site_id and account_id), PY204 (a
 * function of schema prepay without its pinned search_path or with a
 * security mode the rule does not give it: prepay._check_routines).
 *-------------------------------------------------------------------------
 */

-- ---------------------------------------------------------------------
-- roles (cluster-wide: created once, reused by every database)
-- ---------------------------------------------------------------------

DO $$
DECLARE
    r record;
    existing pg_catalog.pg_roles;
BEGIN
    FOR r IN SELECT * FROM (VALUES
        ('prepay_admin',    'prepay administrators: everything in their sites (prepay.site_access), including mapping other logins to them.'),
        ('prepay_operator', 'prepay operators: sites, gateways, meters, accounts, tariffs and relay commands in their sites; money only through the documented functions.'),
        ('prepay_cashier',  'prepay cashiers: recharge, refund, reverse and read balances in their sites; nothing else.'),
        ('prepay_reader',   'prepay readers (BI tools, auditors): read-only access to every table, view and the audit trail of their sites.'),
        ('prepay_tenant',   'prepay tenants: their own accounts, balances, readings, ledger, bills and notifications (prepay.tenant_access).'),
        ('prepay_agent',    'prepay acquisition agents: read the configuration of their gateways, write readings, report on their relay commands (prepay.agent_access).')
    ) AS v (name, description) LOOP
        SELECT * INTO existing FROM pg_catalog.pg_roles WHERE rolname = r.name;
        IF NOT FOUND THEN
            EXECUTE pg_catalog.format('CREATE ROLE %I NOLOGIN', r.name);
        ELSIF existing.rolsuper OR existing.rolbypassrls THEN
            PERFORM prepay._raise('PY202', pg_catalog.format('role %s exists with superuser or bypassrls', r.name),
                'prepay''s group roles are subject to row-level security; a superuser or BYPASSRLS member would see every site.',
                pg_catalog.format('ALTER ROLE %I NOSUPERUSER NOBYPASSRLS, then CREATE EXTENSION prepay again.', r.name));
        END IF;
        EXECUTE pg_catalog.format('COMMENT ON ROLE %I IS %L', r.name, r.description);
    END LOOP;
END $$;

-- ---------------------------------------------------------------------
-- who is calling
-- ---------------------------------------------------------------------

CREATE FUNCTION prepay._caller() RETURNS oid
AS 'MODULE_PATHNAME', 'prepay_caller'
LANGUAGE C STABLE STRICT PARALLEL RESTRICTED SET search_path = pg_catalog, pg_temp;
COMMENT ON FUNCTION prepay._caller() IS
'Internal: OID of the role the current call acts for (the session user, or the role set with SET ROLE), unchanged inside SECURITY DEFINER functions.  extension/security.c.';

CREATE FUNCTION prepay._caller_name() RETURNS name
LANGUAGE sql STABLE PARALLEL RESTRICTED SET search_path = pg_catalog, pg_temp AS $$
    SELECT r.rolname FROM pg_catalog.pg_roles r WHERE r.oid = prepay._caller()
$$;
COMMENT ON FUNCTION prepay._caller_name() IS 'Internal: name of the role the current call acts for (prepay._caller()).';

CREATE FUNCTION prepay._caller_is_superuser() RETURNS boolean
LANGUAGE sql STABLE PARALLEL RESTRICTED SET search_path = pg_catalog, pg_temp AS $$
    SELECT coalesce((SELECT r.rolsuper FROM pg_catalog.pg_roles r WHERE r.oid = prepay._caller()), false)
$$;
COMMENT ON FUNCTION prepay._caller_is_superuser() IS 'Internal: whether the role the current call acts for is a superuser (superusers pass every check).';

-- ---------------------------------------------------------------------
-- mappings: which sites, accounts and agents a role acts on
-- ---------------------------------------------------------------------

CREATE TABLE prepay.site_access (
    site_id    integer NOT NULL REFERENCES prepay.site,
    grantee    name NOT NULL,
    granted_at timestamptz NOT NULL DEFAULT pg_catalog.now(),
    granted_by name NOT NULL DEFAULT SESSION_USER,
    PRIMARY KEY (site_id, grantee)
);
CREATE INDEX site_access_grantee ON prepay.site_access (grantee);
COMMENT ON TABLE prepay.site_access IS 'Which sites a staff role (administrator, operator, cashier, reader) acts on.  grantee is a login or a group role; members of a mapped group are mapped too, so a group role mapped to several sites is a site group.  Row-level security and prepay._authorize read it.';
COMMENT ON COLUMN prepay.site_access.site_id IS 'Site the role may act on.';
COMMENT ON COLUMN prepay.site_access.grantee IS 'Role (login or group) mapped to the site; must exist.';
COMMENT ON COLUMN prepay.site_access.granted_at IS 'When the mapping was made.';
COMMENT ON COLUMN prepay.site_access.granted_by IS 'Database user who made it (session_user).';
COMMENT ON INDEX prepay.site_access_grantee IS 'The mappings of a role: what prepay._my_sites() looks up.';

CREATE TABLE prepay.tenant_access (
    site_id    integer NOT NULL,
    account_id bigint NOT NULL,
    grantee    name NOT NULL,
    granted_at timestamptz NOT NULL DEFAULT pg_catalog.now(),
    granted_by name NOT NULL DEFAULT SESSION_USER,
    PRIMARY KEY (site_id, account_id, grantee),
    FOREIGN KEY (site_id, account_id) REFERENCES prepay.account
);
CREATE INDEX tenant_access_grantee ON prepay.tenant_access (grantee);
COMMENT ON TABLE prepay.tenant_access IS 'Which accounts a tenant role sees: its rows of account, meter, reading, ledger, notification and of every later table with an account_id.';
COMMENT ON COLUMN prepay.tenant_access.site_id IS 'Site of the account.';
COMMENT ON COLUMN prepay.tenant_access.account_id IS 'Account the role may see.';
COMMENT ON COLUMN prepay.tenant_access.grantee IS 'Tenant role (login, or a group such as a family sharing an account); must exist.';
COMMENT ON COLUMN prepay.tenant_access.granted_at IS 'When the mapping was made.';
COMMENT ON COLUMN prepay.tenant_access.granted_by IS 'Database user who made it (session_user).';
COMMENT ON INDEX prepay.tenant_access_grantee IS 'The accounts of a role: what prepay._my_accounts() looks up.';

CREATE TABLE prepay.agent_access (
    site_id    integer NOT NULL REFERENCES prepay.site,
    agent_id   text NOT NULL,
    grantee    name NOT NULL,
    granted_at timestamptz NOT NULL DEFAULT pg_catalog.now(),
    granted_by name NOT NULL DEFAULT SESSION_USER,
    PRIMARY KEY (site_id, agent_id, grantee)
);
CREATE INDEX agent_access_grantee ON prepay.agent_access (grantee);
COMMENT ON TABLE prepay.agent_access IS 'Which agent a login is at a site: it reads the configuration of the gateways whose agent_id this is, writes readings of the site and reports on the commands of those gateways'' meters.';
COMMENT ON COLUMN prepay.agent_access.site_id IS 'Site of the gateways.';
COMMENT ON COLUMN prepay.agent_access.agent_id IS 'The agent id, as in prepay.gateway.agent_id and the agent''s configuration.';
COMMENT ON COLUMN prepay.agent_access.grantee IS 'The agent''s login role; must exist.';
COMMENT ON COLUMN prepay.agent_access.granted_at IS 'When the mapping was made.';
COMMENT ON COLUMN prepay.agent_access.granted_by IS 'Database user who made it (session_user).';
COMMENT ON INDEX prepay.agent_access_grantee IS 'The agent mappings of a role: what prepay._my_agents() looks up.';

CREATE TABLE prepay.api_authenticator (
    site_id    integer NOT NULL REFERENCES prepay.site,
    grantee    name NOT NULL,
    granted_at timestamptz NOT NULL DEFAULT pg_catalog.now(),
    granted_by name NOT NULL DEFAULT SESSION_USER,
    PRIMARY KEY (site_id, grantee)
);
CREATE INDEX api_authenticator_grantee ON prepay.api_authenticator (grantee);
COMMENT ON TABLE prepay.api_authenticator IS 'Which logins are authenticators at a site: the login a connection pooler or REST gateway (PostgREST) connects as before it switches to the request''s role with SET LOCAL ROLE.  The claims such a login passes in request.jwt.claims identify a tenant''s account of that site; claims set by any other login are ignored.  A registered authenticator that switches to a prepay_* group role gets that role''s (empty) mappings, never its own.  docs/INTEGRATION.md.';
COMMENT ON COLUMN prepay.api_authenticator.site_id IS 'Site whose tenants the authenticator''s claims may name.';
COMMENT ON COLUMN prepay.api_authenticator.grantee IS 'The authenticator login (session user of the gateway''s or pooler''s connections); must exist.';
COMMENT ON COLUMN prepay.api_authenticator.granted_at IS 'When the authenticator was registered.';
COMMENT ON COLUMN prepay.api_authenticator.granted_by IS 'Database user who registered it (session_user).';
COMMENT ON INDEX prepay.api_authenticator_grantee IS 'Whether the session user is an authenticator: what prepay._mapping_role() and prepay._authenticated_claims() look up.';

CREATE FUNCTION prepay._mapping_role() RETURNS oid
LANGUAGE sql STABLE PARALLEL RESTRICTED SET search_path = pg_catalog, pg_temp AS $$
    SELECT CASE WHEN c.oid <> s.oid AND s.rolinherit
                     AND c.rolname IN ('prepay_admin', 'prepay_operator', 'prepay_cashier', 'prepay_reader',
                                       'prepay_tenant', 'prepay_agent')
                     AND NOT EXISTS (SELECT 1 FROM prepay.api_authenticator a WHERE a.grantee = SESSION_USER)
                THEN s.oid ELSE c.oid END
      FROM pg_catalog.pg_roles c, pg_catalog.pg_roles s
     WHERE c.oid = prepay._caller() AND s.rolname = SESSION_USER
$$;
COMMENT ON FUNCTION prepay._mapping_role() IS
'Internal: OID of the role whose mappings apply to the current call: the caller (prepay._caller(): the login, or the role it switched to with SET ROLE), so that a pooler''s or gateway''s authenticator that switches to a role gets that role''s mappings and not its own.  One exception keeps direct logins as they were: a login that switches to one of the six prepay_* group roles (which are never mapped) keeps its own mappings, SET ROLE narrowing what it may do, not where; not for an authenticator (prepay.api_authenticator) nor for a NOINHERIT login (as PostgREST''s authenticator is).  Called from the SECURITY DEFINER helpers.';

CREATE FUNCTION prepay._my_roles() RETURNS name[]
LANGUAGE sql STABLE PARALLEL RESTRICTED SET search_path = pg_catalog, pg_temp AS $$
    WITH RECURSIVE member_of (oid) AS (
        SELECT prepay._mapping_role()
        UNION
        SELECT m.roleid FROM pg_catalog.pg_auth_members m JOIN member_of ON m.member = member_of.oid
    )
    SELECT pg_catalog.array_agg(r.rolname) FROM pg_catalog.pg_roles r JOIN member_of ON r.oid = member_of.oid
$$;
COMMENT ON FUNCTION prepay._my_roles() IS
'Internal: the role whose mappings apply (prepay._mapping_role(): the caller, after SET ROLE) and every role it is a member of, directly or through groups: the names a mapping row may name to cover the call.  Not the memberships of the session user: an authenticator that is a member of many roles lends none of their mappings to the role it switched to.  Called from the SECURITY DEFINER helpers.';

CREATE FUNCTION prepay._authenticated_claims() RETURNS jsonb
LANGUAGE plpgsql STABLE PARALLEL RESTRICTED SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    raw text := pg_catalog.current_setting('request.jwt.claims', true);
    claims jsonb;
BEGIN
    IF raw IS NULL OR raw = ''
       OR NOT EXISTS (SELECT 1 FROM prepay.api_authenticator a WHERE a.grantee = SESSION_USER) THEN
        RETURN NULL;                        -- no claims, or claims nobody vouches for
    END IF;
    BEGIN
        claims := raw::jsonb;
    EXCEPTION WHEN invalid_text_representation THEN
        claims := NULL;
    END;
    IF claims IS NULL OR pg_catalog.jsonb_typeof(claims) <> 'object' THEN
        PERFORM prepay._raise('PY203', 'request.jwt.claims is not a JSON object',
            pg_catalog.format('Authenticator %s passed %s.', SESSION_USER, pg_catalog.left(raw, 200)),
            'The gateway sets request.jwt.claims to the verified token''s claims, a JSON object.');
    END IF;
    RETURN claims;
END $$;
COMMENT ON FUNCTION prepay._authenticated_claims() IS
'Internal: the request''s claims (setting request.jwt.claims, as PostgREST sets it per transaction) when the session user is an authenticator (prepay.api_authenticator), else NULL: claims set by any other login are ignored.  PY203 if an authenticator''s claims are not a JSON object.  The audit trail records them.';

CREATE FUNCTION prepay._claimed_accounts() RETURNS TABLE (site_id integer, account_id bigint)
LANGUAGE plpgsql STABLE PARALLEL RESTRICTED SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    claims jsonb := prepay._authenticated_claims();
BEGIN
    IF claims IS NULL OR NOT claims ? 'account_id' THEN
        RETURN;
    END IF;
    IF pg_catalog.jsonb_typeof(claims -> 'site_id') IS DISTINCT FROM 'number'
       OR pg_catalog.jsonb_typeof(claims -> 'account_id') IS DISTINCT FROM 'number'
       OR (claims ->> 'site_id') !~ '^[0-9]{1,9}$' OR (claims ->> 'account_id') !~ '^[0-9]{1,18}$' THEN
        PERFORM prepay._raise('PY203', 'request.jwt.claims names no valid account',
            pg_catalog.format('Authenticator %s passed site_id %s and account_id %s.', SESSION_USER,
                              coalesce(claims ->> 'site_id', 'none'), claims ->> 'account_id'),
            'A tenant''s claims carry the integer site_id and account_id of its account.');
    END IF;
    -- the authenticator vouches for its own sites only, and for the role it switched to
    IF NOT EXISTS (SELECT 1 FROM prepay.api_authenticator a
                    WHERE a.grantee = SESSION_USER AND a.site_id = (claims ->> 'site_id')::integer)
       OR (claims ? 'role' AND (claims ->> 'role') IS DISTINCT FROM prepay._caller_name()::text) THEN
        RETURN;
    END IF;
    RETURN QUERY SELECT (claims ->> 'site_id')::integer, (claims ->> 'account_id')::bigint;
END $$;
COMMENT ON FUNCTION prepay._claimed_accounts() IS
'Internal: the tenant account named by the request''s verified claims (site_id, account_id): only when the session user is an authenticator of that site (prepay.api_authenticator) and the claims'' role, if any, is the role the request acts as.  No row otherwise; PY203 for claims an authenticator passed without integer ids.  prepay._my_accounts() adds it to the mapped accounts.';

CREATE FUNCTION prepay._check_grantee() RETURNS trigger LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_catalog.pg_roles r WHERE r.rolname = NEW.grantee) THEN
        PERFORM prepay._raise('42704', pg_catalog.format('role %s does not exist', NEW.grantee),
            pg_catalog.format('prepay.%s maps roles; %L is not one.', TG_TABLE_NAME, NEW.grantee),
            'Create the login first (CREATE ROLE ... LOGIN) and grant it a prepay_* role.');
    END IF;
    RETURN NEW;
END $$;
COMMENT ON FUNCTION prepay._check_grantee() IS 'Internal: BEFORE INSERT OR UPDATE trigger of the mapping tables refusing a role that does not exist (42704).';
CREATE TRIGGER site_access_grantee BEFORE INSERT OR UPDATE ON prepay.site_access
    FOR EACH ROW EXECUTE FUNCTION prepay._check_grantee();
CREATE TRIGGER tenant_access_grantee BEFORE INSERT OR UPDATE ON prepay.tenant_access
    FOR EACH ROW EXECUTE FUNCTION prepay._check_grantee();
CREATE TRIGGER agent_access_grantee BEFORE INSERT OR UPDATE ON prepay.agent_access
    FOR EACH ROW EXECUTE FUNCTION prepay._check_grantee();
COMMENT ON TRIGGER site_access_grantee ON prepay.site_access IS 'Refuses a mapping of a role that does not exist.';
COMMENT ON TRIGGER tenant_access_grantee ON prepay.tenant_access IS 'Refuses a mapping of a role that does not exist.';
COMMENT ON TRIGGER agent_access_grantee ON prepay.agent_access IS 'Refuses a mapping of a role that does not exist.';
CREATE TRIGGER api_authenticator_grantee BEFORE INSERT OR UPDATE ON prepay.api_authenticator
    FOR EACH ROW EXECUTE FUNCTION prepay._check_grantee();
COMMENT ON TRIGGER api_authenticator_grantee ON prepay.api_authenticator IS 'Refuses registering a role that does not exist.';

CREATE FUNCTION prepay._my_sites() RETURNS integer[]
LANGUAGE plpgsql STABLE PARALLEL RESTRICTED SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    roles name[];
BEGIN
    IF prepay._caller_is_superuser() THEN
        RETURN ARRAY(SELECT s.site_id FROM prepay.site s ORDER BY 1);
    END IF;
    roles := prepay._my_roles();            -- here, not where a distributed table's rows are
    RETURN ARRAY(SELECT DISTINCT a.site_id FROM prepay.site_access a WHERE a.grantee = ANY (roles) ORDER BY 1);
END $$;
COMMENT ON FUNCTION prepay._my_sites() IS
'Internal: the sites the caller acts on as staff (prepay.site_access, through any group it belongs to); every site for a superuser.  The site policies call it once per statement.';

CREATE FUNCTION prepay._my_accounts() RETURNS TABLE (site_id integer, account_id bigint)
LANGUAGE plpgsql STABLE PARALLEL RESTRICTED SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    roles name[] := prepay._my_roles();     -- here, not where a distributed table's rows are
BEGIN
    RETURN QUERY
    SELECT t.site_id, t.account_id FROM prepay.tenant_access t WHERE t.grantee = ANY (roles)
    UNION
    SELECT c.site_id, c.account_id FROM prepay._claimed_accounts() c;
END $$;
COMMENT ON FUNCTION prepay._my_accounts() IS 'Internal: the accounts the caller sees as a tenant: those mapped to it (prepay.tenant_access) and the one its verified claims name (prepay._claimed_accounts()).';

CREATE FUNCTION prepay._is_my_tenant_site(p_site_id integer) RETURNS boolean
LANGUAGE sql STABLE PARALLEL RESTRICTED SET search_path = pg_catalog, pg_temp AS $$
    SELECT EXISTS (SELECT 1 FROM prepay._my_accounts() t WHERE t.site_id = p_site_id)
$$;
COMMENT ON FUNCTION prepay._is_my_tenant_site(integer) IS 'Internal: whether the caller is a tenant of an account of this site (prepay._my_accounts()); the charge_pricing_tenant and actor_tenant policies, row by row without a sub-SELECT (as Citus needs).';

CREATE FUNCTION prepay._my_agents() RETURNS TABLE (site_id integer, agent_id text)
LANGUAGE plpgsql STABLE PARALLEL RESTRICTED SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    roles name[] := prepay._my_roles();     -- here, not where a distributed table's rows are
BEGIN
    RETURN QUERY SELECT DISTINCT a.site_id, a.agent_id FROM prepay.agent_access a WHERE a.grantee = ANY (roles);
END $$;
COMMENT ON FUNCTION prepay._my_agents() IS 'Internal: the (site, agent id) pairs the caller acts as (prepay.agent_access).';

CREATE FUNCTION prepay._is_agent(p_site_id integer, p_agent_id text) RETURNS boolean
LANGUAGE sql STABLE PARALLEL RESTRICTED SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
    SELECT prepay._caller_is_superuser()
        OR EXISTS (SELECT 1 FROM prepay._my_agents() a WHERE a.site_id = p_site_id AND a.agent_id = p_agent_id)
$$;
COMMENT ON FUNCTION prepay._is_agent(integer, text) IS 'Internal: whether the caller acts as this agent at this site (always for a superuser).';

CREATE FUNCTION prepay._reading_sites() RETURNS integer[]
LANGUAGE sql STABLE PARALLEL RESTRICTED SECURITY INVOKER SET search_path = pg_catalog, pg_temp AS $$
    SELECT ARRAY(
        SELECT s.site_id FROM pg_catalog.unnest(prepay._my_sites()) AS s (site_id)
         WHERE pg_catalog.pg_has_role(CURRENT_USER, 'prepay_admin', 'USAGE')
            OR pg_catalog.pg_has_role(CURRENT_USER, 'prepay_operator', 'USAGE')
            OR pg_catalog.pg_has_role(CURRENT_USER, 'prepay_cashier', 'USAGE')
            OR pg_catalog.pg_has_role(CURRENT_USER, 'prepay_reader', 'USAGE')
        UNION
        SELECT a.site_id FROM prepay._my_agents() AS a
         WHERE pg_catalog.pg_has_role(CURRENT_USER, 'prepay_agent', 'USAGE')
        ORDER BY 1)
$$;
COMMENT ON FUNCTION prepay._reading_sites() IS
'Internal: the sites whose readings the current user may insert, as the INSERT policies of prepay.reading allow (site_staff: the staff roles'' prepay._my_sites(); agent_insert: an agent''s prepay._my_agents() sites), ascending.  reading_skip_duplicate asks it once per statement for a writer under row security and refuses the rows of other sites one by one (extension/intake.c); keep it in step with those policies.';

CREATE FUNCTION prepay._site_creator_access() RETURNS trigger LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    IF NOT prepay._caller_is_superuser() THEN
        INSERT INTO prepay.site_access (site_id, grantee)
        SELECT NEW.site_id, r.rolname FROM pg_catalog.pg_roles r WHERE r.oid = prepay._mapping_role()
            ON CONFLICT DO NOTHING;
    END IF;
    RETURN NULL;
END $$;
COMMENT ON FUNCTION prepay._site_creator_access() IS 'Internal: AFTER INSERT trigger on prepay.site mapping the administrator who created a site to it (the role whose mappings apply to the call, prepay._mapping_role(); a superuser maps logins explicitly).';
CREATE TRIGGER site_creator_access AFTER INSERT ON prepay.site
    FOR EACH ROW EXECUTE FUNCTION prepay._site_creator_access();
COMMENT ON TRIGGER site_creator_access ON prepay.site IS 'An administrator who creates a site is mapped to it.';

-- ---------------------------------------------------------------------
-- authorization: one helper per kind of caller; every SECURITY DEFINER
-- function of the public API starts with one of them
-- ---------------------------------------------------------------------

CREATE FUNCTION prepay._capability_roles(p_capability text) RETURNS name[]
LANGUAGE plpgsql IMMUTABLE PARALLEL SAFE SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    CASE p_capability
        WHEN 'administer' THEN RETURN '{prepay_admin}';
        WHEN 'manage' THEN RETURN '{prepay_admin,prepay_operator}';
        WHEN 'relay' THEN RETURN '{prepay_admin,prepay_operator}';
        WHEN 'money' THEN RETURN '{prepay_admin,prepay_cashier}';
        WHEN 'read' THEN RETURN '{prepay_admin,prepay_operator,prepay_cashier,prepay_reader}';
        ELSE
            PERFORM prepay._raise('22023', pg_catalog.format('unknown capability %L', p_capability),
                'The capabilities are administer, manage, relay, money and read.',
                'Use one of them, or add the new one to prepay._capability_roles and docs/SECURITY.md.');
    END CASE;
    RETURN NULL;
END $$;
COMMENT ON FUNCTION prepay._capability_roles(text) IS
'Internal: the prepay roles that hold a capability: administer (admin), manage and relay (admin, operator), money (admin, cashier), read (admin, operator, cashier, reader).  The table of docs/SECURITY.md.';

CREATE FUNCTION prepay._has_capability(p_capability text) RETURNS boolean
LANGUAGE sql STABLE PARALLEL RESTRICTED SET search_path = pg_catalog, pg_temp AS $$
    SELECT prepay._caller_is_superuser()
        OR EXISTS (SELECT 1 FROM pg_catalog.unnest(prepay._capability_roles(p_capability)) AS r (name)
                    JOIN pg_catalog.pg_roles g ON g.rolname = r.name
                   WHERE pg_catalog.pg_has_role(prepay._caller(), g.oid, 'USAGE'))
$$;
COMMENT ON FUNCTION prepay._has_capability(text) IS 'Internal: whether the caller has the privileges of a role holding the capability (always for a superuser).';

CREATE FUNCTION prepay._authorize(p_site_id integer, p_capability text) RETURNS void
LANGUAGE plpgsql STABLE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    IF prepay._caller_is_superuser() THEN
        RETURN;
    END IF;
    IF NOT prepay._has_capability(p_capability) THEN
        PERFORM prepay._raise('42501', pg_catalog.format('permission denied: %s needs the %s capability',
                                                         prepay._caller_name(), p_capability),
            pg_catalog.format('Role %s has none of the roles %s.', prepay._caller_name(),
                              pg_catalog.array_to_string(prepay._capability_roles(p_capability), ', ')),
            pg_catalog.format('GRANT %s TO %s;', (prepay._capability_roles(p_capability))[
                pg_catalog.array_length(prepay._capability_roles(p_capability), 1)], prepay._caller_name()));
    END IF;
    IF p_site_id IS NULL OR NOT p_site_id = ANY (prepay._my_sites()) THEN
        PERFORM prepay._raise('42501', pg_catalog.format('permission denied for site %s', coalesce(p_site_id::text, 'NULL')),
            pg_catalog.format('Role %s is not mapped to site %s.', prepay._caller_name(), coalesce(p_site_id::text, 'NULL')),
            'An administrator of the site maps the login (or a group role it belongs to) in prepay.site_access.');
    END IF;
END $$;
COMMENT ON FUNCTION prepay._authorize(integer, text) IS
'Check that the caller may use a capability (manage, relay, money, read, administer) at a site: it has the privileges of one of the capability''s roles and is mapped to the site in prepay.site_access.  Raises 42501 otherwise; superusers always pass.  Call it first in every SECURITY DEFINER function of the public API.';

CREATE FUNCTION prepay._authorize_account(p_site_id integer, p_account_id bigint, p_capability text) RETURNS void
LANGUAGE plpgsql STABLE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    IF prepay._caller_is_superuser() THEN
        RETURN;
    END IF;
    IF prepay._has_capability(p_capability) AND p_site_id = ANY (prepay._my_sites()) THEN
        RETURN;
    END IF;
    IF pg_catalog.pg_has_role(prepay._caller(), 'prepay_tenant', 'USAGE')
       AND EXISTS (SELECT 1 FROM prepay._my_accounts() t WHERE t.site_id = p_site_id AND t.account_id = p_account_id) THEN
        RETURN;
    END IF;
    PERFORM prepay._raise('42501', pg_catalog.format('permission denied for account %s of site %s',
                                                     coalesce(p_account_id::text, 'NULL'), coalesce(p_site_id::text, 'NULL')),
        pg_catalog.format('Role %s neither has the %s capability at the site nor is a tenant of the account.',
                          prepay._caller_name(), p_capability),
        'Staff are mapped to sites in prepay.site_access, tenants to accounts in prepay.tenant_access.');
END $$;
COMMENT ON FUNCTION prepay._authorize_account(integer, bigint, text) IS
'Like prepay._authorize for a function about one account, which the account''s tenants (prepay.tenant_access, role prepay_tenant) may also call.  Raises 42501.';

CREATE FUNCTION prepay._authorize_agent(p_site_id integer, p_gateway_id bigint) RETURNS void
LANGUAGE plpgsql STABLE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    gateway_agent text;
BEGIN
    IF prepay._caller_is_superuser() THEN
        RETURN;
    END IF;
    IF NOT pg_catalog.pg_has_role(prepay._caller(), 'prepay_agent', 'USAGE') THEN
        PERFORM prepay._raise('42501', pg_catalog.format('permission denied: %s is not an agent', prepay._caller_name()),
            pg_catalog.format('Role %s does not have the privileges of prepay_agent.', prepay._caller_name()),
            pg_catalog.format('GRANT prepay_agent TO %s;', prepay._caller_name()));
    END IF;
    IF NOT EXISTS (SELECT 1 FROM prepay._my_agents() a WHERE a.site_id = p_site_id) THEN
        PERFORM prepay._raise('42501', pg_catalog.format('permission denied for site %s', coalesce(p_site_id::text, 'NULL')),
            pg_catalog.format('Role %s is no agent of site %s.', prepay._caller_name(), coalesce(p_site_id::text, 'NULL')),
            'Map the agent''s login in prepay.agent_access.');
    END IF;
    SELECT g.agent_id INTO gateway_agent FROM prepay.gateway g WHERE g.site_id = p_site_id AND g.gateway_id = p_gateway_id;
    IF FOUND AND NOT prepay._is_agent(p_site_id, gateway_agent) THEN
        PERFORM prepay._raise('42501', pg_catalog.format('permission denied for gateway %s of site %s', p_gateway_id, p_site_id),
            pg_catalog.format('Gateway %s is polled by agent %s, not by role %s.', p_gateway_id,
                              coalesce(pg_catalog.quote_literal(gateway_agent), 'none'), prepay._caller_name()),
            'An agent reports only on its own gateways, meters and commands.');
    END IF;
END $$;
COMMENT ON FUNCTION prepay._authorize_agent(integer, bigint) IS
'Check that the caller is an agent of the site (prepay.agent_access) and, when the gateway exists, the agent that polls it.  An unknown gateway passes so that the calling function reports it with its own SQLSTATE.  Raises 42501; superusers always pass.';

CREATE FUNCTION prepay._authorize_agent_id(p_agent_id text) RETURNS void
LANGUAGE plpgsql STABLE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    IF prepay._caller_is_superuser() THEN
        RETURN;
    END IF;
    IF NOT pg_catalog.pg_has_role(prepay._caller(), 'prepay_agent', 'USAGE')
       OR NOT EXISTS (SELECT 1 FROM prepay._my_agents() a WHERE a.agent_id = p_agent_id) THEN
        PERFORM prepay._raise('42501', pg_catalog.format('permission denied for agent %s', coalesce(pg_catalog.quote_literal(p_agent_id), 'NULL')),
            pg_catalog.format('Role %s is not mapped as agent %s at any site.', prepay._caller_name(),
                              coalesce(pg_catalog.quote_literal(p_agent_id), 'NULL')),
            'Map the agent''s login in prepay.agent_access and GRANT prepay_agent to it.');
    END IF;
END $$;
COMMENT ON FUNCTION prepay._authorize_agent_id(text) IS
'Check that the caller is an agent mapped under this agent id at one site at least (prepay.agent_access); the calling function then serves only those sites (prepay._is_agent).  Raises 42501; superusers always pass.';

-- ---------------------------------------------------------------------
-- the audit trail
-- ---------------------------------------------------------------------

CREATE SEQUENCE prepay.audit_id_seq;
COMMENT ON SEQUENCE prepay.audit_id_seq IS 'Source of audit entry ids; increasing ids give the order of entries.';

CREATE TABLE prepay.audit (
    site_id          integer NOT NULL,
    audit_id         bigint NOT NULL DEFAULT pg_catalog.nextval('prepay.audit_id_seq'),
    logged_at        timestamptz NOT NULL DEFAULT pg_catalog.now(),
    login            name NOT NULL DEFAULT SESSION_USER,
    acting_role      name NOT NULL,
    application_name text,
    client_addr      inet DEFAULT pg_catalog.inet_client_addr(),
    transaction_id   xid8 NOT NULL DEFAULT pg_catalog.pg_current_xact_id(),
    action           text NOT NULL,
    object           text NOT NULL,
    object_key       jsonb NOT NULL,
    before_values    jsonb,
    after_values     jsonb,
    claims           jsonb DEFAULT prepay._authenticated_claims(),
    PRIMARY KEY (site_id, audit_id)
);
COMMENT ON TABLE prepay.audit IS 'Append-only audit trail: every money movement other than consumption charges (from the ledger), and every direct change to a configuration table (tariffs, thresholds, protect flags, meters, accounts, gateways, mappings, ...) and to relay commands, with who, when, what and the values before and after.  UPDATE, DELETE and TRUNCATE are refused (PY201).  Read it through prepay.audit_trail.';
COMMENT ON COLUMN prepay.audit.site_id IS 'Site of the changed row.';
COMMENT ON COLUMN prepay.audit.audit_id IS 'Entry id; increasing with time.';
COMMENT ON COLUMN prepay.audit.logged_at IS 'Transaction time of the change.';
COMMENT ON COLUMN prepay.audit.login IS 'The session user (the login that connected).';
COMMENT ON COLUMN prepay.audit.acting_role IS 'The role the change was made as (prepay._caller()): the login, or the role it switched to with SET ROLE or SET LOCAL ROLE (behind a pooler or REST gateway, the request''s role while login is the authenticator).';
COMMENT ON COLUMN prepay.audit.application_name IS 'The client''s application_name (set by the client: informative, not proof).';
COMMENT ON COLUMN prepay.audit.client_addr IS 'The client''s address; NULL over a Unix socket.';
COMMENT ON COLUMN prepay.audit.transaction_id IS 'The changing transaction: entries of one call share it.';
COMMENT ON COLUMN prepay.audit.action IS 'insert, update or delete for a row change; the ledger kind (recharge, refund, reversal, closing_refund, ...) for a money movement.';
COMMENT ON COLUMN prepay.audit.object IS 'Table changed (ledger for a money movement).';
COMMENT ON COLUMN prepay.audit.object_key IS 'Primary key of the changed row.';
COMMENT ON COLUMN prepay.audit.before_values IS 'The row before the change (NULL for an insert); for a money movement the account''s balance before.';
COMMENT ON COLUMN prepay.audit.after_values IS 'The row after the change (NULL for a delete); for a money movement the ledger entry and the balance after.';
COMMENT ON COLUMN prepay.audit.claims IS 'The request''s verified claims (request.jwt.claims) when the login is an authenticator (prepay.api_authenticator): which end user a REST gateway acted for.  NULL for any other login, whose claims are not trusted.';

CREATE FUNCTION prepay._audit_refuse_change() RETURNS trigger LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    PERFORM prepay._raise('PY201', 'the prepay audit trail is append-only',
        pg_catalog.format('%s on prepay.audit was refused.', TG_OP),
        'Audit entries are never changed; a superuser can archive old ones in session_replication_role = replica.');
    RETURN NULL;
END $$;
COMMENT ON FUNCTION prepay._audit_refuse_change() IS 'Internal: refuses UPDATE, DELETE and TRUNCATE on the audit trail (PY201).';
CREATE TRIGGER audit_append_only BEFORE UPDATE OR DELETE OR TRUNCATE ON prepay.audit
    FOR EACH STATEMENT EXECUTE FUNCTION prepay._audit_refuse_change();
COMMENT ON TRIGGER audit_append_only ON prepay.audit IS 'The audit trail is append-only.';

CREATE FUNCTION prepay._audit_free_id() RETURNS trigger LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    WHILE EXISTS (SELECT 1 FROM prepay.audit a WHERE a.site_id = NEW.site_id AND a.audit_id = NEW.audit_id) LOOP
        NEW.audit_id := pg_catalog.nextval('prepay.audit_id_seq');
    END LOOP;
    RETURN NEW;
END $$;
COMMENT ON FUNCTION prepay._audit_free_id() IS
'Internal: BEFORE INSERT trigger on prepay.audit giving an entry whose id is taken the next free one.  Only a restore outside session_replication_role = replica needs it: the restored tables'' audit triggers write entries before the dumped ones are copied in, and neither may be lost.';
CREATE TRIGGER audit_free_id BEFORE INSERT ON prepay.audit
    FOR EACH ROW EXECUTE FUNCTION prepay._audit_free_id();
COMMENT ON TRIGGER audit_free_id ON prepay.audit IS 'Renumbers an entry whose id is taken (a restore outside replica mode), so that no entry is lost.';

CREATE FUNCTION prepay._audit_row() RETURNS trigger LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    old_values jsonb;
    new_values jsonb;
    key jsonb := '{}';
BEGIN
    IF TG_OP <> 'INSERT' THEN
        old_values := pg_catalog.to_jsonb(OLD);
    END IF;
    IF TG_OP <> 'DELETE' THEN
        new_values := pg_catalog.to_jsonb(NEW);
    END IF;
    IF old_values = new_values THEN
        RETURN NULL;                        -- an UPDATE that changed nothing
    END IF;
    FOR i IN 0 .. TG_NARGS - 1 LOOP
        key := key || pg_catalog.jsonb_build_object(TG_ARGV[i], coalesce(new_values, old_values) -> TG_ARGV[i]);
    END LOOP;
    INSERT INTO prepay.audit (site_id, acting_role, application_name, action, object, object_key,
                              before_values, after_values)
    VALUES ((coalesce(new_values, old_values) ->> 'site_id')::integer, prepay._caller_name(),
            pg_catalog.current_setting('application_name'), pg_catalog.lower(TG_OP), TG_TABLE_NAME, key,
            old_values, new_values);
    RETURN NULL;
END $$;
COMMENT ON FUNCTION prepay._audit_row() IS
'Internal: AFTER row trigger writing one audit entry per inserted, updated or deleted row (its arguments name the primary key columns).  Attached to every configuration table by sql/security.sql.';

CREATE FUNCTION prepay._audit_money() RETURNS trigger LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    INSERT INTO prepay.audit (site_id, acting_role, application_name, action, object, object_key,
                              before_values, after_values)
    VALUES (NEW.site_id, prepay._caller_name(), pg_catalog.current_setting('application_name'), NEW.kind::text,
            'ledger', pg_catalog.jsonb_build_object('site_id', NEW.site_id, 'entry_id', NEW.entry_id),
            pg_catalog.jsonb_build_object('account_id', NEW.account_id, 'balance', NEW.balance_after - NEW.amount),
            (pg_catalog.to_jsonb(NEW) - 'pieces' - 'pricing_id' - 'balance_after')
                || pg_catalog.jsonb_build_object('balance', NEW.balance_after));
    RETURN NULL;
END $$;
COMMENT ON FUNCTION prepay._audit_money() IS
'Internal: AFTER INSERT row trigger on prepay.ledger writing one audit entry per money movement other than a consumption charge (recharge, refund, reversal, closing refund, adjustment, fees, ...): the balance before, the entry and the balance after.';
CREATE TRIGGER audit_money AFTER INSERT ON prepay.ledger
    FOR EACH ROW WHEN (NEW.kind <> 'consumption') EXECUTE FUNCTION prepay._audit_money();
COMMENT ON TRIGGER audit_money ON prepay.ledger IS 'Every money movement but consumption charges (the rating trigger''s, explained by their readings) is audited.';

CREATE VIEW prepay.audit_trail AS
SELECT a.site_id, a.audit_id, a.logged_at, a.login, a.acting_role, a.application_name, a.client_addr,
       a.transaction_id, a.action, a.object, a.object_key,
       c.changed,
       CASE WHEN a.action = 'update'
            THEN (SELECT pg_catalog.jsonb_object_agg(k, a.before_values -> k) FROM pg_catalog.unnest(c.changed) AS k)
            ELSE a.before_values END AS before_values,
       CASE WHEN a.action = 'update'
            THEN (SELECT pg_catalog.jsonb_object_agg(k, a.after_values -> k) FROM pg_catalog.unnest(c.changed) AS k)
            ELSE a.after_values END AS after_values,
       a.claims
  FROM prepay.audit a
  LEFT JOIN LATERAL (
        SELECT pg_catalog.array_agg(k ORDER BY k) AS changed
          FROM pg_catalog.jsonb_object_keys(a.after_values) AS k
         WHERE a.action = 'update' AND (a.after_values -> k) IS DISTINCT FROM (a.before_values -> k)) AS c ON true;
COMMENT ON VIEW prepay.audit_trail IS 'The audit trail for auditors: who (login, acting role, application, address), when, what (action, table, key) and, for an update, only the columns that changed with their values before and after.';
COMMENT ON COLUMN prepay.audit_trail.site_id IS 'Site of the changed row.';
COMMENT ON COLUMN prepay.audit_trail.audit_id IS 'Entry id.';
COMMENT ON COLUMN prepay.audit_trail.logged_at IS 'Transaction time of the change.';
COMMENT ON COLUMN prepay.audit_trail.login IS 'The session user.';
COMMENT ON COLUMN prepay.audit_trail.acting_role IS 'The role the change was made as (after SET ROLE).';
COMMENT ON COLUMN prepay.audit_trail.application_name IS 'The client''s application_name.';
COMMENT ON COLUMN prepay.audit_trail.client_addr IS 'The client''s address (NULL over a Unix socket).';
COMMENT ON COLUMN prepay.audit_trail.transaction_id IS 'The changing transaction.';
COMMENT ON COLUMN prepay.audit_trail.action IS 'insert, update, delete, or the ledger kind of a money movement.';
COMMENT ON COLUMN prepay.audit_trail.object IS 'Table changed.';
COMMENT ON COLUMN prepay.audit_trail.object_key IS 'Primary key of the changed row.';
COMMENT ON COLUMN prepay.audit_trail.changed IS 'For an update, the columns that changed; NULL otherwise.';
COMMENT ON COLUMN prepay.audit_trail.before_values IS 'Values before: the changed columns of an update, the whole deleted row, the balance before a money movement.';
COMMENT ON COLUMN prepay.audit_trail.after_values IS 'Values after: the changed columns of an update, the whole inserted row, the entry and balance after a money movement.';
COMMENT ON COLUMN prepay.audit_trail.claims IS 'The verified claims of a request through an authenticator (REST gateway); NULL otherwise.';

-- ---------------------------------------------------------------------
-- The generic part.  Everything below loops over the catalog, so that
-- the tables, views and functions of every earlier file are covered.
-- The few per-object decisions are in the lists at the top of each block;
-- docs/SECURITY.md says when a new file must add to them.
-- ---------------------------------------------------------------------

-- functions: the check (prepay._check_routines), then the grants.  Each
-- function declares its security mode and its pinned search_path in its own
-- CREATE FUNCTION; the check refuses the install (PY204, naming the
-- function) when a function of any earlier file breaks the rule.
CREATE FUNCTION prepay._check_routines() RETURNS void
LANGUAGE plpgsql STABLE SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    f record;
    -- the per-row trigger probes the primary key index directly (SPI only
    -- once per statement, and as the owner for the rare rows it refuses):
    -- SECURITY INVOKER so that COPY pays no per-row role switch; the bulk
    -- intake's drain must insert with its writer's own rights
    invoker_triggers constant text[] := '{reading_skip_duplicate,reading_intake_drain}';
    -- SECURITY DEFINER helpers the policies and authorizing functions use
    helpers constant text[] := '{_my_sites,_my_accounts,_my_agents,_is_agent,_authorize,_authorize_account,'
                               '_authorize_agent,_authorize_agent_id}';
    pinned constant text := 'search_path=pg_catalog, pg_temp';
BEGIN
    FOR f IN
        SELECT p.oid::regprocedure AS sig, p.proname, p.prosecdef, p.proconfig,
               p.prorettype = 'pg_catalog.trigger'::pg_catalog.regtype AS is_trigger,
               p.prosrc ~ 'prepay\._authorize' AS authorizes
          FROM pg_catalog.pg_proc p
         WHERE p.pronamespace = 'prepay'::pg_catalog.regnamespace
           AND p.prokind <> 'a'              -- an aggregate has no SET clause; its support functions are checked
         ORDER BY p.oid
    LOOP
        IF NOT pinned = ANY (coalesce(f.proconfig, '{}')) THEN
            PERFORM prepay._raise('PY204', pg_catalog.format('function %s has no pinned search_path', f.sig),
                'Every function of schema prepay runs with search_path = pg_catalog, pg_temp, whatever its security mode, so that no object of a caller''s schema (public, "$user") can stand in for a built-in.',
                'Add SET search_path = pg_catalog, pg_temp to its CREATE FUNCTION and qualify what its body names (prepay.x).');
        END IF;
        IF f.prosecdef <> ((f.is_trigger AND NOT f.proname = ANY (invoker_triggers)) OR f.proname = ANY (helpers)
                           OR (f.authorizes AND f.proname !~ '^_')) THEN
            PERFORM prepay._raise('PY204', pg_catalog.format('function %s is declared SECURITY %s', f.sig,
                                                             CASE WHEN f.prosecdef THEN 'DEFINER' ELSE 'INVOKER' END),
                CASE WHEN f.prosecdef
                     THEN 'Only trigger functions, the authorization helpers and public functions that call prepay._authorize* first are SECURITY DEFINER.'
                     ELSE 'A public function that calls prepay._authorize*, and a trigger function other than reading_skip_duplicate and reading_intake_drain, is SECURITY DEFINER.' END,
                'Declare the mode in its CREATE FUNCTION as docs/SECURITY.md ("What a new SQL file must do") says.');
        END IF;
    END LOOP;
END $$;
COMMENT ON FUNCTION prepay._check_routines() IS
'Internal: raise PY204, naming the function, if a function of schema prepay has no pinned search_path (pg_catalog, pg_temp) or declares a security mode the rule does not give it: SECURITY DEFINER for trigger functions (but reading_skip_duplicate, per row, and reading_intake_drain, which must insert with the writer''s own rights), the authorization helpers and the public functions that call prepay._authorize*; SECURITY INVOKER for the rest.  The install runs it after every file''s functions exist.';

-- EXECUTE for the prepay roles only, never for PUBLIC, none on triggers
CREATE FUNCTION prepay._grant_routines() RETURNS void
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    f record;
    roles constant text := 'prepay_admin, prepay_operator, prepay_cashier, prepay_reader, prepay_tenant, prepay_agent';
BEGIN
    FOR f IN
        SELECT p.oid::regprocedure AS sig, p.prorettype = 'pg_catalog.trigger'::pg_catalog.regtype AS is_trigger
          FROM pg_catalog.pg_proc p
         WHERE p.pronamespace = 'prepay'::pg_catalog.regnamespace
         ORDER BY p.oid
    LOOP
        EXECUTE pg_catalog.format('REVOKE ALL ON ROUTINE %s FROM PUBLIC', f.sig);
        -- triggers do prepay's bookkeeping with the owner's rights; nobody
        -- may attach them to a table of their own (CREATE TRIGGER needs EXECUTE)
        CONTINUE WHEN f.is_trigger;
        -- SECURITY INVOKER functions run with the caller's own grants and
        -- policies; SECURITY DEFINER ones authorize their caller
        EXECUTE pg_catalog.format('GRANT EXECUTE ON ROUTINE %s TO %s', f.sig, roles);
    END LOOP;
END $$;
COMMENT ON FUNCTION prepay._grant_routines() IS
'Internal: the rights of every function of schema prepay: none for PUBLIC, EXECUTE for the prepay roles, none on a trigger function.  The install runs it after prepay._check_routines(), and so does every upgrade script, last, for the functions it created or replaced.';
-- views read with the caller's rights (security_invoker), so the policies
-- of their tables apply; materialized views are left to superusers
CREATE FUNCTION prepay._grant_views() RETURNS void
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    v record;
BEGIN
    FOR v IN
        SELECT c.oid::regclass AS rel, c.relname, c.relkind,
               EXISTS (SELECT 1 FROM pg_catalog.pg_attribute a
                        WHERE a.attrelid = c.oid AND a.attname = 'account_id' AND NOT a.attisdropped) AS has_account
          FROM pg_catalog.pg_class c
         WHERE c.relnamespace = 'prepay'::pg_catalog.regnamespace AND c.relkind IN ('v', 'm')
         ORDER BY c.relname
    LOOP
        EXECUTE pg_catalog.format('REVOKE ALL ON TABLE %s FROM PUBLIC', v.rel);
        CONTINUE WHEN v.relkind = 'm';     -- no row-level security on a materialized view
        EXECUTE pg_catalog.format('ALTER VIEW %s SET (security_invoker = true)', v.rel);
        IF v.relname = 'audit_trail' THEN
            EXECUTE pg_catalog.format('GRANT SELECT ON TABLE %s TO prepay_admin, prepay_reader', v.rel);
        ELSE
            EXECUTE pg_catalog.format('GRANT SELECT ON TABLE %s TO prepay_admin, prepay_operator, prepay_reader', v.rel);
            IF v.has_account THEN
                EXECUTE pg_catalog.format('GRANT SELECT ON TABLE %s TO prepay_tenant', v.rel);
            END IF;
        END IF;
    END LOOP;
END $$;
COMMENT ON FUNCTION prepay._grant_views() IS
'Internal: every view of schema prepay reads with its caller''s rights (security_invoker), so the policies of its tables apply, and is readable by the staff roles (audit_trail by administrators and readers only) and, when it has an account_id, by tenants; no view for PUBLIC.  The install runs it, and so does every upgrade script, last, for the views it created or replaced (CREATE OR REPLACE VIEW resets a view''s options).';
SELECT prepay._check_routines();
SELECT prepay._grant_routines();

-- tables: row-level security by site (FORCE'd), tenant and agent policies,
-- grants, audit triggers
DO $$
DECLARE
    t record;
    staff constant text := 'prepay_admin, prepay_operator, prepay_cashier, prepay_reader';
    mine constant text := 'site_id = ANY ((SELECT prepay._my_sites())::integer[])';
    -- tables with an account_id that tenants do not see
    tenant_hidden constant text[] := '{command,alarm,tenant_access}';
    -- tables not audited row by row: readings and alarms are telemetry,
    -- notifications an outbox, the ledger is audited by audit_money; what
    -- the billing jobs and batch runners derive is read-only and kept with
    -- its inputs (period_charge.inputs, apportionment, batch_item results)
    not_audited constant text[] := '{reading,reading_refused,ledger,payment_reference,reversed_entry,charge_pricing,actor,alarm,notification,audit,period_charge,apportionment,bill_line,'
                                   'bill_entry,bill_payment,batch_item,energy_day_folded,energy_month_folded,energy_pending,consumption_posting_day,'
                                   'cut_reminder,multiplier_change,notify_secret,notification_delivery}';
    account_config constant text := 'code, name, phone, email, floor_area, capacity_kva, mode, tariff_id, credit_limit, '
                                    'low_balance_threshold, pretrip_threshold';
    meter_config constant text := 'code, kind, multiplier, max_per_hour, building, floor, room, gateway_id, unit_id, '
                                  'device_profile, tariff_id';
    reading_input constant text := 'site_id, meter_id, read_at, energy, sharp, peak, flat, valley, power, relay_state';
    config_dml constant text := 'SELECT, INSERT, UPDATE, DELETE';
    -- COPY FROM is refused on a table with row security: the bulk intake
    -- has none, and no role may read it (INSERT only; extension/intake.c)
    no_row_security constant text[] := '{reading_intake}';
    grants text[];
    grant_row text[];
    granted boolean;
    keys text;
    audited_columns text;
BEGIN
    -- explicit grants of the tables prepay.sql, tariff.sql, agent.sql and
    -- this file create; a table missing here gets the defaults below
    grants := ARRAY[
        ['site', 'prepay_admin', config_dml], ['site', 'prepay_operator', 'SELECT, UPDATE'],
        ['site', 'prepay_cashier', 'SELECT'], ['site', 'prepay_reader', 'SELECT'],
        ['no_cut_window', 'prepay_admin', config_dml], ['no_cut_window', 'prepay_operator', config_dml],
        ['no_cut_window', 'prepay_reader', 'SELECT'],
        ['gateway', 'prepay_admin', config_dml], ['gateway', 'prepay_operator', config_dml],
        ['gateway', 'prepay_reader', 'SELECT'], ['gateway', 'prepay_agent', 'SELECT'],
        ['tariff', 'prepay_admin', config_dml], ['tariff', 'prepay_operator', config_dml],
        ['tariff', 'prepay_reader', 'SELECT'],
        ['tariff_version', 'prepay_admin', config_dml], ['tariff_version', 'prepay_operator', config_dml],
        ['tariff_version', 'prepay_reader', 'SELECT'],
        ['holiday', 'prepay_admin', config_dml], ['holiday', 'prepay_operator', config_dml],
        ['holiday', 'prepay_reader', 'SELECT'],
        ['device_profile', 'prepay_admin', config_dml], ['device_profile', 'prepay_operator', config_dml],
        ['device_profile', 'prepay_reader', 'SELECT'], ['device_profile', 'prepay_agent', 'SELECT'],
        ['profile_register', 'prepay_admin', config_dml], ['profile_register', 'prepay_operator', config_dml],
        ['profile_register', 'prepay_reader', 'SELECT'], ['profile_register', 'prepay_agent', 'SELECT'],
        ['account', 'prepay_admin', 'SELECT, UPDATE (' || account_config || ')'],
        ['account', 'prepay_operator', 'SELECT, UPDATE (' || account_config || ')'],
        ['account', 'prepay_cashier', 'SELECT'], ['account', 'prepay_reader', 'SELECT'],
        ['meter', 'prepay_admin', 'SELECT, INSERT (site_id, ' || meter_config || '), UPDATE (' || meter_config || ')'],
        ['meter', 'prepay_operator', 'SELECT, INSERT (site_id, ' || meter_config || '), UPDATE (' || meter_config || ')'],
        ['meter', 'prepay_reader', 'SELECT'],
        ['meter', 'prepay_agent', 'SELECT (site_id, meter_id, gateway_id, unit_id, kind, device_profile, active, lost_since)'],
        ['reading', 'prepay_admin', 'SELECT, INSERT (' || reading_input || ')'],
        ['reading', 'prepay_operator', 'SELECT, INSERT (' || reading_input || ')'],
        ['reading', 'prepay_reader', 'SELECT'], ['reading', 'prepay_tenant', 'SELECT'],
        ['reading', 'prepay_agent', 'INSERT (' || reading_input || ')'],
        ['reading_intake', 'prepay_admin', 'INSERT (' || reading_input || ')'],
        ['reading_intake', 'prepay_operator', 'INSERT (' || reading_input || ')'],
        ['reading_intake', 'prepay_agent', 'INSERT (' || reading_input || ')'],
        ['reading_refused', 'prepay_admin', 'SELECT'], ['reading_refused', 'prepay_operator', 'SELECT'],
        ['reading_refused', 'prepay_reader', 'SELECT'],
        ['ledger', 'prepay_admin', 'SELECT'], ['ledger', 'prepay_operator', 'SELECT'],
        ['ledger', 'prepay_cashier', 'SELECT'], ['ledger', 'prepay_reader', 'SELECT'],
        ['payment_reference', 'prepay_admin', 'SELECT'], ['payment_reference', 'prepay_operator', 'SELECT'],
        ['payment_reference', 'prepay_cashier', 'SELECT'], ['payment_reference', 'prepay_reader', 'SELECT'],
        ['reversed_entry', 'prepay_admin', 'SELECT'], ['reversed_entry', 'prepay_operator', 'SELECT'],
        ['reversed_entry', 'prepay_cashier', 'SELECT'], ['reversed_entry', 'prepay_reader', 'SELECT'],
        ['charge_pricing', 'prepay_admin', 'SELECT'], ['charge_pricing', 'prepay_operator', 'SELECT'],
        ['charge_pricing', 'prepay_cashier', 'SELECT'], ['charge_pricing', 'prepay_reader', 'SELECT'],
        ['charge_pricing', 'prepay_tenant', 'SELECT'],
        ['actor', 'prepay_admin', 'SELECT'], ['actor', 'prepay_operator', 'SELECT'],
        ['actor', 'prepay_cashier', 'SELECT'], ['actor', 'prepay_reader', 'SELECT'],
        ['actor', 'prepay_tenant', 'SELECT'],
        ['command', 'prepay_admin', 'SELECT'], ['command', 'prepay_operator', 'SELECT'],
        ['command', 'prepay_reader', 'SELECT'],
        ['alarm', 'prepay_admin', 'SELECT, UPDATE (cleared_at)'], ['alarm', 'prepay_operator', 'SELECT, UPDATE (cleared_at)'],
        ['alarm', 'prepay_reader', 'SELECT'],
        ['notification', 'prepay_admin', 'SELECT, UPDATE (delivered_at)'],
        ['notification', 'prepay_operator', 'SELECT, UPDATE (delivered_at)'],
        ['notification', 'prepay_reader', 'SELECT'],
        ['audit', 'prepay_admin', 'SELECT'], ['audit', 'prepay_reader', 'SELECT'],
        ['site_access', 'prepay_admin', config_dml],
        ['tenant_access', 'prepay_admin', config_dml],
        ['agent_access', 'prepay_admin', config_dml],
        ['api_authenticator', 'prepay_admin', config_dml],
        -- billing (billing.sql): rules are configuration; what the jobs and
        -- the bill functions write is read-only for everyone
        ['account_group', 'prepay_admin', config_dml], ['account_group', 'prepay_operator', config_dml],
        ['account_group', 'prepay_reader', 'SELECT'],
        ['account_group_member', 'prepay_admin', config_dml], ['account_group_member', 'prepay_operator', config_dml],
        ['account_group_member', 'prepay_reader', 'SELECT'],
        ['charge_item', 'prepay_admin', config_dml], ['charge_item', 'prepay_operator', config_dml],
        ['charge_item', 'prepay_reader', 'SELECT'],
        ['allowance_rule', 'prepay_admin', config_dml], ['allowance_rule', 'prepay_operator', config_dml],
        ['allowance_rule', 'prepay_reader', 'SELECT'],
        ['apportion_rule', 'prepay_admin', config_dml], ['apportion_rule', 'prepay_operator', config_dml],
        ['apportion_rule', 'prepay_reader', 'SELECT'],
        ['period_charge', 'prepay_admin', 'SELECT'], ['period_charge', 'prepay_operator', 'SELECT'],
        ['period_charge', 'prepay_cashier', 'SELECT'], ['period_charge', 'prepay_reader', 'SELECT'],
        ['apportionment', 'prepay_admin', 'SELECT'], ['apportionment', 'prepay_operator', 'SELECT'],
        ['apportionment', 'prepay_reader', 'SELECT'],
        ['bill', 'prepay_admin', 'SELECT'], ['bill', 'prepay_operator', 'SELECT'],
        ['bill', 'prepay_cashier', 'SELECT'], ['bill', 'prepay_reader', 'SELECT'],
        ['bill_line', 'prepay_admin', 'SELECT'], ['bill_line', 'prepay_operator', 'SELECT'],
        ['bill_line', 'prepay_cashier', 'SELECT'], ['bill_line', 'prepay_reader', 'SELECT'],
        ['bill_line', 'prepay_tenant', 'SELECT'],
        ['bill_entry', 'prepay_admin', 'SELECT'], ['bill_entry', 'prepay_operator', 'SELECT'],
        ['bill_entry', 'prepay_reader', 'SELECT'],
        ['bill_payment', 'prepay_admin', 'SELECT'], ['bill_payment', 'prepay_operator', 'SELECT'],
        ['bill_payment', 'prepay_cashier', 'SELECT'], ['bill_payment', 'prepay_reader', 'SELECT'],
        -- batch operations (batch.sql): written only through create_batch and the runners
        ['batch', 'prepay_admin', 'SELECT'], ['batch', 'prepay_operator', 'SELECT'],
        ['batch', 'prepay_reader', 'SELECT'],
        ['batch_item', 'prepay_admin', 'SELECT'], ['batch_item', 'prepay_operator', 'SELECT'],
        ['batch_item', 'prepay_reader', 'SELECT'],
        -- reports (reports.sql): rollups and logs kept by triggers and jobs
        ['energy_day_folded', 'prepay_admin', 'SELECT'], ['energy_day_folded', 'prepay_operator', 'SELECT'],
        ['energy_day_folded', 'prepay_reader', 'SELECT'],
        ['energy_month_folded', 'prepay_admin', 'SELECT'], ['energy_month_folded', 'prepay_operator', 'SELECT'],
        ['energy_month_folded', 'prepay_reader', 'SELECT'],
        ['energy_pending', 'prepay_admin', 'SELECT'], ['energy_pending', 'prepay_operator', 'SELECT'],
        ['energy_pending', 'prepay_reader', 'SELECT'],
        ['consumption_posting_day', 'prepay_admin', 'SELECT'], ['consumption_posting_day', 'prepay_operator', 'SELECT'],
        ['consumption_posting_day', 'prepay_reader', 'SELECT'],
        ['cut_reminder', 'prepay_admin', 'SELECT'], ['cut_reminder', 'prepay_operator', 'SELECT'],
        ['cut_reminder', 'prepay_reader', 'SELECT'],
        ['multiplier_change', 'prepay_admin', 'SELECT'], ['multiplier_change', 'prepay_operator', 'SELECT'],
        ['multiplier_change', 'prepay_reader', 'SELECT'],
        -- notification delivery (notify.sql): secrets for administrators only
        -- (the agent gets them from agent_claim_deliveries); deliveries are
        -- written by triggers and the agent functions
        ['notify_site', 'prepay_admin', config_dml], ['notify_site', 'prepay_operator', config_dml],
        ['notify_site', 'prepay_reader', 'SELECT'],
        ['account_language', 'prepay_admin', config_dml], ['account_language', 'prepay_operator', config_dml],
        ['account_language', 'prepay_reader', 'SELECT'],
        ['notify_channel', 'prepay_admin', config_dml], ['notify_channel', 'prepay_operator', 'SELECT'],
        ['notify_channel', 'prepay_reader', 'SELECT'],
        ['notify_secret', 'prepay_admin', config_dml],
        ['notify_template', 'prepay_admin', config_dml], ['notify_template', 'prepay_operator', config_dml],
        ['notify_template', 'prepay_reader', 'SELECT'],
        ['notification_delivery', 'prepay_admin', 'SELECT'], ['notification_delivery', 'prepay_operator', 'SELECT'],
        ['notification_delivery', 'prepay_reader', 'SELECT']];

    FOR t IN
        SELECT c.oid::regclass AS rel, c.relname,
               EXISTS (SELECT 1 FROM pg_catalog.pg_attribute a
                        WHERE a.attrelid = c.oid AND a.attname = 'site_id' AND NOT a.attisdropped) AS has_site,
               EXISTS (SELECT 1 FROM pg_catalog.pg_attribute a
                        WHERE a.attrelid = c.oid AND a.attname = 'account_id' AND NOT a.attisdropped) AS has_account
          FROM pg_catalog.pg_class c
         WHERE c.relnamespace = 'prepay'::pg_catalog.regnamespace AND c.relkind IN ('r', 'p')
           AND NOT c.relispartition    -- a partition is reached through its table (its rights and policies)
         ORDER BY c.relname
    LOOP
        EXECUTE pg_catalog.format('REVOKE ALL ON TABLE %s FROM PUBLIC', t.rel);

        -- grants: the explicit list, else administrators may change and
        -- operators and readers read a table of a later file
        granted := false;
        FOREACH grant_row SLICE 1 IN ARRAY grants LOOP
            IF grant_row[1] = t.relname THEN
                EXECUTE pg_catalog.format('GRANT %s ON TABLE %s TO %I', grant_row[3], t.rel, grant_row[2]);
                granted := true;
            END IF;
        END LOOP;
        IF NOT granted THEN
            EXECUTE pg_catalog.format('GRANT %s ON TABLE %s TO prepay_admin', config_dml, t.rel);
            EXECUTE pg_catalog.format('GRANT SELECT ON TABLE %s TO prepay_operator, prepay_reader', t.rel);
        END IF;

        CONTINUE WHEN NOT t.has_site;       -- 14_security lists such a table as a defect
        CONTINUE WHEN t.relname = ANY (no_row_security);

        -- row-level security: staff see and write the rows of their sites
        EXECUTE pg_catalog.format('ALTER TABLE %s ENABLE ROW LEVEL SECURITY', t.rel);
        EXECUTE pg_catalog.format('ALTER TABLE %s FORCE ROW LEVEL SECURITY', t.rel);
        EXECUTE pg_catalog.format('CREATE POLICY site_staff ON %s TO %s USING (%s) WITH CHECK (%s)', t.rel, staff, mine, mine);
        EXECUTE pg_catalog.format('COMMENT ON POLICY site_staff ON %s IS %L', t.rel,
            'Administrators, operators, cashiers and readers see and change only the rows of the sites they are mapped to (prepay.site_access); their grants decide which changes.');

        -- tenants see the rows of their own accounts
        IF t.has_account AND NOT t.relname = ANY (tenant_hidden) THEN
            EXECUTE pg_catalog.format('GRANT SELECT ON TABLE %s TO prepay_tenant', t.rel);
            EXECUTE pg_catalog.format('CREATE POLICY account_tenant ON %s FOR SELECT TO prepay_tenant '
                                      'USING ((site_id, account_id) IN (SELECT t.site_id, t.account_id FROM prepay._my_accounts() t))', t.rel);
            EXECUTE pg_catalog.format('COMMENT ON POLICY account_tenant ON %s IS %L', t.rel,
                'Tenants see only the rows of the accounts mapped to them (prepay.tenant_access).');
        END IF;

        -- the audit trail: every change of a configuration table; for
        -- account, meter and gateway only the columns people set, not the
        -- state the rating trigger and the agent keep
        CONTINUE WHEN t.relname = ANY (not_audited);
        SELECT pg_catalog.string_agg(pg_catalog.quote_literal(a.attname), ', ' ORDER BY k.ord) INTO keys
          FROM pg_catalog.pg_constraint pk
         CROSS JOIN LATERAL pg_catalog.unnest(pk.conkey) WITH ORDINALITY AS k (attnum, ord)
          JOIN pg_catalog.pg_attribute a ON a.attrelid = pk.conrelid AND a.attnum = k.attnum
         WHERE pk.conrelid = t.rel AND pk.contype = 'p';
        SELECT pg_catalog.string_agg(pg_catalog.quote_ident(a.attname), ', ' ORDER BY a.attnum) INTO audited_columns
          FROM pg_catalog.pg_attribute a
         WHERE a.attrelid = t.rel AND a.attnum > 0 AND NOT a.attisdropped
           AND NOT (t.relname = 'account' AND a.attname IN ('balance', 'alarm_level'))
           AND NOT (t.relname = 'meter' AND a.attname IN ('relay_state', 'relay_state_at', 'lost_since', 'last_read_at',
                    'last_energy', 'charge_carry', 'cycle_start', 'cycle_used', 'last_sharp', 'last_peak', 'last_flat',
                    'last_valley'))
           AND NOT (t.relname = 'gateway' AND a.attname = 'lost_since');
        EXECUTE pg_catalog.format('CREATE TRIGGER audit AFTER INSERT OR DELETE OR UPDATE OF %s ON %s '
                                  'FOR EACH ROW EXECUTE FUNCTION prepay._audit_row(%s)',
                                  audited_columns, t.rel, coalesce(keys, ''));
        EXECUTE pg_catalog.format('COMMENT ON TRIGGER audit ON %s IS %L', t.rel,
            'Every change of this table is written to the audit trail (prepay.audit), with the values before and after.');
    END LOOP;
END $$;

-- the policies that are not one per table
CREATE POLICY site_create ON prepay.site FOR INSERT TO prepay_admin WITH CHECK (true);
COMMENT ON POLICY site_create ON prepay.site IS 'Administrators may create sites; the creator is mapped to the new site (trigger site_creator_access).  Read the new site_id back with a SELECT: RETURNING is checked before the mapping exists.';

CREATE POLICY reading_tenant ON prepay.reading FOR SELECT TO prepay_tenant USING (
    EXISTS (SELECT 1 FROM prepay.meter m
              JOIN prepay.account a ON a.site_id = m.site_id AND a.account_id = m.account_id
             WHERE m.site_id = reading.site_id AND m.meter_id = reading.meter_id AND reading.read_at >= a.opened_at));
COMMENT ON POLICY reading_tenant ON prepay.reading IS 'Tenants see the readings of the meters of their accounts since the account was opened (not the previous occupant''s).';

CREATE POLICY charge_pricing_tenant ON prepay.charge_pricing FOR SELECT TO prepay_tenant USING (
    prepay._is_my_tenant_site(site_id));
COMMENT ON POLICY charge_pricing_tenant ON prepay.charge_pricing IS 'Tenants see the pricing of the one-piece charges of their sites, which explains their own charges (prepay.explain_charge).';

CREATE POLICY actor_tenant ON prepay.actor FOR SELECT TO prepay_tenant USING (
    prepay._is_my_tenant_site(site_id));
COMMENT ON POLICY actor_tenant ON prepay.actor IS 'Tenants see the logins that posted at their sites, which name who posted their own entries (ledger.actor_id).';

CREATE POLICY bill_line_tenant ON prepay.bill_line FOR SELECT TO prepay_tenant USING (
    EXISTS (SELECT 1 FROM prepay.bill b WHERE b.site_id = bill_line.site_id AND b.bill_id = bill_line.bill_id));
COMMENT ON POLICY bill_line_tenant ON prepay.bill_line IS 'Tenants see the lines of the bills they see (their own accounts'').';

CREATE POLICY agent_gateway ON prepay.gateway FOR SELECT TO prepay_agent
    USING ((site_id, agent_id) IN (SELECT a.site_id, a.agent_id FROM prepay._my_agents() a));
COMMENT ON POLICY agent_gateway ON prepay.gateway IS 'An agent sees the gateways it polls (prepay.agent_access).';
CREATE POLICY agent_meter ON prepay.meter FOR SELECT TO prepay_agent
    USING ((site_id, gateway_id) IN (SELECT g.site_id, g.gateway_id FROM prepay.gateway g));
COMMENT ON POLICY agent_meter ON prepay.meter IS 'An agent sees the meters on the gateways it sees.';
CREATE POLICY agent_site ON prepay.device_profile FOR SELECT TO prepay_agent
    USING (site_id IN (SELECT a.site_id FROM prepay._my_agents() a));
COMMENT ON POLICY agent_site ON prepay.device_profile IS 'An agent sees the device profiles of the sites it is an agent of.';
CREATE POLICY agent_site ON prepay.profile_register FOR SELECT TO prepay_agent
    USING (site_id IN (SELECT a.site_id FROM prepay._my_agents() a));
COMMENT ON POLICY agent_site ON prepay.profile_register IS 'An agent sees the registers of the device profiles of the sites it is an agent of.';
CREATE POLICY agent_insert ON prepay.reading FOR INSERT TO prepay_agent
    WITH CHECK (site_id IN (SELECT a.site_id FROM prepay._my_agents() a));
COMMENT ON POLICY agent_insert ON prepay.reading IS 'An agent writes readings of the sites it is an agent of (of any meter there, so that a reading of a meter just moved is kept and quarantined, never refused).';

-- views read with the caller's rights (prepay._grant_views, defined above)
SELECT prepay._grant_views();

-- cashiers collect what issued bills still ask for
GRANT SELECT ON prepay.bill_arrears TO prepay_cashier;

GRANT USAGE ON SCHEMA prepay TO prepay_admin, prepay_operator, prepay_cashier, prepay_reader, prepay_tenant, prepay_agent;
GRANT USAGE ON ALL SEQUENCES IN SCHEMA prepay TO prepay_admin, prepay_operator;

-- ---------------------------------------------------------------------
-- pg_dump: the mappings and the audit trail are user data
-- ---------------------------------------------------------------------

SELECT pg_catalog.pg_extension_config_dump('prepay.site_access', '');
SELECT pg_catalog.pg_extension_config_dump('prepay.tenant_access', '');
SELECT pg_catalog.pg_extension_config_dump('prepay.agent_access', '');
SELECT pg_catalog.pg_extension_config_dump('prepay.api_authenticator', '');
SELECT pg_catalog.pg_extension_config_dump('prepay.audit', '');
SELECT pg_catalog.pg_extension_config_dump('prepay.audit_id_seq', '');
