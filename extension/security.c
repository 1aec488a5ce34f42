/*-------------------------------------------------------------------------
 *
 * extension/security.c
 *	  Who is calling: the one thing the authorization helpers of
 *	  sql/security.sql cannot learn in SQL.
 *
 * Inside a SECURITY DEFINER function current_user is the function's
 * owner, and session_user ignores SET ROLE.  The role whose rights a call
 * must be judged by is the "outer" user: the session user, or the role it
 * switched to with SET ROLE, as it stands outside any function.
 * PostgreSQL keeps it in OuterUserId, which a SECURITY DEFINER function
 * does not change and cannot change (SET ROLE is refused inside one).
 * prepay._caller() returns it; prepay._authorize() and the row-level
 * security policies use it to find the caller's sites and capabilities.
 *
 * Copyright (c) 2026, the prepay authors
 *
 * IDENTIFICATION
 *	  extension/security.c
 *
 *-------------------------------------------------------------------------
 */
#include "prepay.h"

#include "fmgr.h"
#include "miscadmin.h"

PG_FUNCTION_INFO_V1(prepay_caller);

/*
 * prepay_caller
 *		SQL: prepay._caller() returns oid.  The OID of the role the current
 *		call acts for: the session user, or the role set with SET ROLE,
 *		whatever SECURITY DEFINER functions are on the stack.
 */
Datum
prepay_caller(PG_FUNCTION_ARGS)
{
	PG_RETURN_OID(GetOuterUserId());
}
