"""Installing where users are: managed services (no superuser) and psql alone, on PostgreSQL 15 and 18.

Managed services (RDS, Cloud SQL, Azure, Supabase, Neon) give a role with CREATEROLE that owns the database.
The tests run on private clusters (tests/support/pgcluster.py), one per major shared by the module and reset
to a new server's state before each test, since docnum's roles are cluster-wide and the suite's shared server
already has them: on Debian's PostgreSQL 15 (membership semantics) and on the embedded 18 (ADMIN / SET /
INHERIT options of a grant).

What an installer that is not a superuser must get:
- `docnum migrate` creates docnum's roles and installs; the installer can then GRANT docnum's roles to logins;
- it may SET ROLE docnum_owner but never inherits its rights, and is its only member (from 16 a SET-only
  membership; on 15 a membership that lasts only as long as each migration's transaction);
- roles someone else made stop the migration before it changes anything, with NB013 whose HINT is the exact
  statement to run; run it, and the migration goes through;
- `docnum sql` prints a script that psql runs alone (`psql -1 -v ON_ERROR_STOP=1 -f`), to install or to
  upgrade, after which `docnum migrate` has nothing to do.
"""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict
from test_migrations import assert_same_schema, dump_schema

from docnum.ops import schema
from support.helpers import ServerInfo, require_or_skip
from support.pgcluster import PrivateCluster, postgres_bindirs

pytestmark = pytest.mark.slow  # `make test-fast` leaves it out

MAJORS = [15, 18]
PASSWORD = "installer-secret"


def _cluster(major: int, **options: Any) -> PrivateCluster:
    bindir = postgres_bindirs().get(major)
    if bindir is None:
        require_or_skip(
            f"no PostgreSQL {major} server binaries here (.ci/run installs Debian's postgresql-15)"
        )
    assert bindir is not None
    return PrivateCluster.start(bindir, **options)


@pytest.fixture(scope="module", params=MAJORS, ids=[f"pg{major}" for major in MAJORS])
def shared_cluster(request: pytest.FixtureRequest) -> Iterator[PrivateCluster]:
    with _cluster(request.param) as started:
        yield started


@pytest.fixture
def cluster(shared_cluster: PrivateCluster) -> PrivateCluster:
    """A server as new: no database but postgres, no role but the superuser."""
    reset(shared_cluster)
    return shared_cluster


def reset(cluster: PrivateCluster) -> None:
    """Drop every database but postgres and the templates, and every role but the superuser's."""
    with cluster.connect(autocommit=True) as su:
        for (name,) in su.execute(
            "SELECT datname FROM pg_database WHERE NOT datistemplate AND datname <> 'postgres'"
        ).fetchall():
            su.execute(sql.SQL("DROP DATABASE {} WITH (FORCE)").format(sql.Identifier(name)))
        roles = [
            row[0]
            for row in su.execute(
                "SELECT rolname FROM pg_roles WHERE rolname !~ '^pg_' AND rolname <> current_user"
            ).fetchall()
        ]
        while roles:  # from 16 a role that granted a membership goes after its grants' members
            left = []
            for role in roles:
                try:
                    su.execute(sql.SQL("DROP ROLE {}").format(sql.Identifier(role)))
                except psycopg.errors.DependentObjectsStillExist:
                    left.append(role)
            assert len(left) < len(roles), f"roles that cannot be dropped: {left}"
            roles = left


def _env(dsn: str | None) -> dict[str, str]:
    env = {key: value for key, value in os.environ.items() if not key.startswith(("DOCNUM_", "PG"))}
    if dsn is not None:
        env["DOCNUM_DSN"] = dsn
    return env


def docnum(dsn: str | None, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "docnum", *args], capture_output=True, text=True, timeout=120, env=_env(dsn)
    )


def ok(result: subprocess.CompletedProcess[str]) -> str:
    assert result.returncode == 0, (result.args, result.stdout, result.stderr)
    return result.stdout


def new_installer(cluster: PrivateCluster, *, createrole: bool = True) -> tuple[str, str]:
    """A login role as managed services give it (CREATEROLE, owner of a new database): (name, its dsn)."""
    name = f"installer_{uuid.uuid4().hex[:6]}"
    with cluster.connect(autocommit=True) as su:
        su.execute(
            sql.SQL("CREATE ROLE {} LOGIN {} PASSWORD {}").format(
                sql.Identifier(name), sql.SQL("CREATEROLE" if createrole else ""), sql.Literal(PASSWORD)
            )
        )
        su.execute(sql.SQL("CREATE DATABASE {} OWNER {}").format(sql.Identifier(name), sql.Identifier(name)))
    return name, cluster.dsn(name, name, PASSWORD)


def new_database(cluster: PrivateCluster, owner: str) -> str:
    """Another database owned by `owner`: its dsn, as `owner`."""
    name = f"{owner}_{uuid.uuid4().hex[:4]}"
    with cluster.connect(autocommit=True) as su:
        su.execute(sql.SQL("CREATE DATABASE {} OWNER {}").format(sql.Identifier(name), sql.Identifier(owner)))
    return cluster.dsn(name, owner, PASSWORD)


def owner_memberships(cluster: PrivateCluster) -> list[tuple[Any, ...]]:
    """(member, admin, inherit, set) of every membership in docnum_owner (inherit and set: None on 15)."""
    with cluster.connect(autocommit=True) as su:
        options = "m.inherit_option, m.set_option" if cluster.major >= 16 else "NULL, NULL"
        return su.execute(
            f"SELECT m.member::regrole::text, m.admin_option, {options} FROM pg_auth_members m"
            " WHERE m.roleid = 'docnum_owner'::regrole ORDER BY 1, 2"
        ).fetchall()


def installed(dsn: str) -> bool:
    with psycopg.connect(dsn, autocommit=True) as conn:
        return conn.execute("SELECT to_regnamespace('docnum') IS NOT NULL").fetchone() == (True,)


def test_a_database_owner_with_createrole_installs_grants_and_numbers(cluster: PrivateCluster) -> None:
    installer, dsn = new_installer(cluster)
    ok(docnum(dsn, "migrate"))

    # Never docnum_owner's rights; the only member, and only with SET (16+) or not at all (15).
    if cluster.major >= 16:
        assert owner_memberships(cluster) == [
            (installer, False, False, True),
            (installer, True, False, False),
        ]
    else:
        assert owner_memberships(cluster) == []
    with psycopg.connect(dsn, autocommit=True) as conn:
        assert conn.execute("SELECT pg_has_role('docnum_owner', 'USAGE')").fetchone() == (False,)
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            conn.execute("SELECT count(*) FROM docnum.ledger")
        # What managed services do with roles: hand them out.
        conn.execute("CREATE ROLE web LOGIN PASSWORD 'web-secret'")
        conn.execute("GRANT docnum_app TO web")
        conn.execute(sql.SQL("GRANT docnum_admin TO {}").format(sql.Identifier(installer)))
    ok(docnum(dsn, "define-type", "COR", "{TYPE}-{SEQ:4}"))
    web = cluster.dsn(installer, "web", "web-secret")
    assert ok(docnum(web, "next", "COR")).split()[-1] == "COR-0001"
    with psycopg.connect(web, autocommit=True) as conn, pytest.raises(psycopg.errors.InsufficientPrivilege):
        conn.execute("UPDATE docnum.counter SET current_value = 0")

    # Again: nothing to do. Down to nothing and up again, as the installer.
    assert "latest revision" in ok(docnum(dsn, "migrate"))
    schema.downgrade(dsn, "base")
    assert not installed(dsn)
    schema.migrate(dsn)
    assert installed(dsn)
    if cluster.major < 16:
        assert owner_memberships(cluster) == []


def test_roles_someone_else_made_stop_migrate_until_the_hint_is_run(cluster: PrivateCluster) -> None:
    """The roles exist (made for another database of the cluster): an installer that cannot become
    docnum_owner gets NB013 with the statement to run, nothing changed; once it is run, migrate works."""
    _, first_dsn = new_installer(cluster)
    ok(docnum(first_dsn, "migrate"))
    # From 16 CREATEROLE alone gives no right on roles another role made; on 15 it gives every right, so
    # there the installer that is refused is one without CREATEROLE.
    second, dsn = new_installer(cluster, createrole=cluster.major >= 16)

    refused = docnum(dsn, "migrate")
    assert refused.returncode == 1, refused
    assert refused.stderr.startswith("error NB013:"), refused.stderr
    hint = next(line for line in refused.stderr.splitlines() if line.strip().startswith("hint:"))
    statement = hint.split("As a superuser:", 1)[1].strip().split(";")[0] + ";"
    expected = (
        f"GRANT docnum_owner TO {second} WITH INHERIT FALSE, SET TRUE;"
        if cluster.major >= 16
        else f"ALTER ROLE {second} CREATEROLE;"
    )
    assert statement == expected
    assert not installed(dsn)
    with psycopg.connect(dsn, autocommit=True) as conn:
        assert conn.execute("SELECT to_regclass('public.alembic_version')").fetchone() == (None,)

    with cluster.connect(autocommit=True) as su:
        su.execute(statement)
    ok(docnum(dsn, "migrate"))
    assert installed(dsn)
    with psycopg.connect(dsn, autocommit=True) as conn:
        assert conn.execute("SELECT pg_has_role('docnum_owner', 'USAGE')").fetchone() == (False,)

    # The first installer's doctor names the second as another member of docnum_owner (16+: it holds SET).
    report = docnum(first_dsn, "doctor", "--json")
    if cluster.major >= 16:
        assert f"{second} is a member of docnum_owner" in report.stdout
    else:
        assert "is a member of docnum_owner" not in report.stdout


def test_an_inheriting_membership_is_refused(cluster: PrivateCluster) -> None:
    """An installer that would hold docnum_owner's rights (a plain GRANT by an administrator) is refused: it
    could write docnum's tables directly. The hint takes the inheritance away, and migrate goes through."""
    installer, dsn = new_installer(cluster)
    with cluster.connect(autocommit=True) as su:
        su.execute(
            "DO $$ BEGIN CREATE ROLE docnum_owner NOLOGIN NOINHERIT; EXCEPTION WHEN duplicate_object"
            " THEN NULL; END $$"
        )
        su.execute(sql.SQL("GRANT docnum_owner TO {}").format(sql.Identifier(installer)))
    refused = docnum(dsn, "migrate")
    assert refused.stderr.startswith("error NB013:"), refused.stderr
    assert "inherits docnum_owner's rights" in refused.stderr
    assert not installed(dsn)
    hint = next(line for line in refused.stderr.splitlines() if line.strip().startswith("hint:"))
    with cluster.connect(autocommit=True) as su:
        su.execute(hint.split("As a superuser:", 1)[1].split(";")[0])
    ok(docnum(dsn, "migrate"))
    with psycopg.connect(dsn, autocommit=True) as conn:
        assert conn.execute("SELECT pg_has_role('docnum_owner', 'USAGE')").fetchone() == (False,)


@pytest.mark.parametrize("major", [18])
def test_createrole_self_grant_never_makes_the_installer_inherit(major: int) -> None:
    """From 16 a service may set createrole_self_grant = 'set, inherit' for its admin role: the roles the
    installer makes are still granted to it with SET only (docnum_owner) and nothing inherits."""
    with _cluster(major) as cluster:
        installer, dsn = new_installer(cluster)
        with cluster.connect(autocommit=True) as su:
            su.execute(
                sql.SQL("ALTER ROLE {} SET createrole_self_grant = 'set, inherit'").format(
                    sql.Identifier(installer)
                )
            )
        ok(docnum(dsn, "migrate"))
        assert owner_memberships(cluster) == [
            (installer, False, False, True),
            (installer, True, False, False),
        ]


def test_the_doctor_tells_what_the_connected_role_can_do(cluster: PrivateCluster) -> None:
    installer, dsn = new_installer(cluster)
    before = docnum(dsn, "doctor", "--json")
    assert '"install"' in before.stdout, before
    ok(docnum(dsn, "migrate"))
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("CREATE ROLE stranger LOGIN PASSWORD 'stranger-secret'")
    after = docnum(dsn, "doctor")
    assert "install" in after.stdout and "grant" in after.stdout, after
    stranger = docnum(cluster.dsn(installer, "stranger", "stranger-secret"), "doctor")
    assert "may not" in stranger.stdout, stranger


# -- psql alone ---------------------------------------------------------------------------------------


def psql(
    pg_bindir: Path, dsn: str, script: str, *, one_transaction: bool = True
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [
            str(pg_bindir / "psql"),
            "-X",
            "-q",
            *(["-1"] if one_transaction else []),
            "-v",
            "ON_ERROR_STOP=1",
            "-f",
            "-",
            dsn,
        ],
        input=script,
        capture_output=True,
        text=True,
        timeout=300,
        env=_env(None),
    )


def test_psql_installs_docnum_and_migrate_then_has_nothing_to_do(
    cluster: PrivateCluster, pg_bindir: Path
) -> None:
    installer, dsn = new_installer(cluster)
    script = ok(docnum(None, "sql"))
    result = psql(pg_bindir, dsn, script)
    assert result.returncode == 0, result.stderr
    with psycopg.connect(dsn, autocommit=True) as conn:
        head = schema_head()
        assert conn.execute("SELECT version_num FROM public.alembic_version").fetchall() == [(head,)]
    assert "latest revision" in ok(docnum(dsn, "migrate"))
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(sql.SQL("GRANT docnum_admin TO {}").format(sql.Identifier(installer)))
    ok(docnum(dsn, "define-type", "INV", "{TYPE}/{SEQ:3}"))
    assert ok(docnum(dsn, "next", "INV")).split()[-1] == "INV/001"
    if cluster.major < 16:
        assert owner_memberships(cluster) == []


def test_psql_upgrades_an_older_revision_as_migrate_does(cluster: PrivateCluster, pg_bindir: Path) -> None:
    installer, first = new_installer(cluster)
    databases = []
    for dsn in (first, new_database(cluster, installer)):
        schema.migrate(dsn, "0004")
        with psycopg.connect(dsn, autocommit=True) as conn:
            conn.execute(sql.SQL("GRANT docnum_admin TO {}").format(sql.Identifier(installer)))
            conn.execute("SELECT docnum.define_type(code => 'OLD', format => '{TYPE}-{SEQ}')")
            conn.execute("SELECT docnum.next_number('OLD')")
        databases.append(dsn)
    older, fresh = databases
    result = psql(pg_bindir, older, ok(docnum(None, "sql", "--from", "0004")))
    assert result.returncode == 0, result.stderr
    schema.migrate(fresh)
    server = ServerInfo(
        host="127.0.0.1", port=cluster.port, user=cluster.superuser, password=cluster.password
    )
    assert_same_schema(
        dump_schema(server, conninfo_to_dict(fresh)["dbname"], pg_bindir),
        dump_schema(server, conninfo_to_dict(older)["dbname"], pg_bindir),
        "0004, then docnum migrate",
        "0004, then psql with `docnum sql --from 0004`",
    )
    with psycopg.connect(older, autocommit=True) as conn:
        assert conn.execute("SELECT docnum.next_number('OLD')").fetchone() == ("OLD-2",)


def test_the_script_refuses_to_run_outside_one_transaction(cluster: PrivateCluster, pg_bindir: Path) -> None:
    _, dsn = new_installer(cluster)
    result = psql(pg_bindir, dsn, ok(docnum(None, "sql")), one_transaction=False)
    assert result.returncode != 0
    assert "must run in one transaction" in result.stderr
    assert not installed(dsn)


def schema_head() -> str:
    from alembic.script import ScriptDirectory

    (head,) = ScriptDirectory.from_config(schema.alembic_config("")).get_heads()
    return str(head)


# -- docs/install.md's managed-service commands, on a simulation of each service ---------------------------

DOCS = Path(__file__).resolve().parents[2] / "docs"
MANAGED_MARKER = "<!-- tests/ops/test_install.py runs this block for each service below -->"


def doc_block(manual: str, after: str, language: str, index: int = 0) -> str:
    """The `index`th fenced block in `language` after the line `after` of docs/`manual`."""
    text = (DOCS / manual).read_text(encoding="utf-8")
    assert after in text, f"docs/{manual} lost {after!r}"
    rest = text.split(after, 1)[1]
    blocks = rest.split(f"```{language}\n")[1:]
    return blocks[index].split("```", 1)[0]


@dataclass(frozen=True)
class Service:
    """What a managed service gives: a superuser we never use, the admin role (CREATEROLE, owner of the
    database, member of the service's group role), the database."""

    superuser: str
    admin: str
    group: str | None
    dbname: str
    major: int


SERVICES = {
    "rds": Service("rdsadmin", "postgres", "rds_superuser", "orders", 18),
    "cloudsql": Service("cloudsqladmin", "postgres", "cloudsqlsuperuser", "orders", 15),
    "azure": Service("azuresu", "orders_admin", "azure_pg_admin", "orders", 18),
    "supabase": Service("supabase_admin", "postgres", None, "postgres", 15),
    "neon": Service("cloud_admin", "neondb_owner", "neon_superuser", "neondb", 18),
}


@contextmanager
def managed(service: Service) -> Iterator[PrivateCluster]:
    # fsync on, as on a service: docs/install.md's `docnum doctor` must pass
    with _cluster(service.major, superuser=service.superuser, settings={"fsync": "on"}) as cluster:
        with cluster.connect(autocommit=True) as su:
            admin = sql.Identifier(service.admin)
            su.execute(
                sql.SQL("CREATE ROLE {} LOGIN CREATEROLE CREATEDB PASSWORD {}").format(
                    admin, sql.Literal(PASSWORD)
                )
            )
            if service.group:
                su.execute(sql.SQL("CREATE ROLE {} NOLOGIN").format(sql.Identifier(service.group)))
                su.execute(sql.SQL("GRANT {} TO {}").format(sql.Identifier(service.group), admin))
            if service.dbname == "postgres":
                su.execute(sql.SQL("ALTER DATABASE postgres OWNER TO {}").format(admin))
            else:
                su.execute(
                    sql.SQL("CREATE DATABASE {} OWNER {}").format(sql.Identifier(service.dbname), admin)
                )
        yield cluster


def run_install_block(cluster: PrivateCluster, service: Service, pg_bindir: Path) -> None:
    block = doc_block("install.md", MANAGED_MARKER, "sh")
    script = (
        block.replace(
            "ADMIN:PASSWORD@HOST:5432/DBNAME",
            f"{service.admin}:{PASSWORD}@127.0.0.1:{cluster.port}/{service.dbname}",
        ).replace("sslmode=require", "sslmode=disable")  # the private servers have no TLS
    )
    assert "ADMIN" not in script and "DBNAME" not in script, script
    env = _env(None)
    env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), str(pg_bindir), env.get("PATH", "")])
    result = subprocess.run(
        ["bash", "-euo", "pipefail", "-c", script], capture_output=True, text=True, timeout=300, env=env
    )
    assert result.returncode == 0, (script, result.stdout, result.stderr)


@pytest.mark.parametrize("name", sorted(SERVICES))
def test_the_install_manual_installs_on_each_managed_service(name: str, pg_bindir: Path) -> None:
    """docs/install.md's block, as written, on a server set up as the service sets it up; then the login it
    made numbers documents, and the admin role never holds docnum_owner's rights."""
    service = SERVICES[name]
    with managed(service) as cluster:
        run_install_block(cluster, service, pg_bindir)
        app = cluster.dsn(service.dbname, "orders_app", "app-secret")
        with psycopg.connect(app, autocommit=True) as conn:
            number = conn.execute(
                "SELECT docnum.next_number('COR', document_date => '2026-03-01')"
            ).fetchone()
            assert number == ("COR-2026-00001",)
        admin = cluster.dsn(service.dbname, service.admin, PASSWORD)
        with psycopg.connect(admin, autocommit=True) as conn:
            assert conn.execute("SELECT pg_has_role('docnum_owner', 'USAGE')").fetchone() == (False,)


def test_the_http_manual_supabase_section_runs_as_supabases_postgres_role(pg_bindir: Path) -> None:
    """After the managed install, docs/http-api.md's Supabase/PostgREST SQL, run by Supabase's `postgres` role
    (no superuser), gives signed-in users reservations through the `api` wrappers, recorded under their
    `sub`."""
    service = SERVICES["supabase"]
    with managed(service) as cluster:
        with cluster.connect(autocommit=True) as su:  # what Supabase has before you start
            for role in ("anon", "authenticated", "web_user"):
                su.execute(sql.SQL("CREATE ROLE {} NOLOGIN").format(sql.Identifier(role)))
        run_install_block(cluster, service, pg_bindir)
        admin = cluster.dsn(service.dbname, service.admin, PASSWORD)
        for index in range(2):
            section = doc_block("http-api.md", "## Supabase and PostgREST", "sql", index)
            result = psql(pg_bindir, admin, section)
            assert result.returncode == 0, (section, result.stderr)
        with psycopg.connect(cluster.dsn(service.dbname), autocommit=True) as conn, conn.transaction():
            conn.execute("SET LOCAL ROLE authenticated")
            conn.execute("SELECT set_config('request.jwt.claims', '{\"sub\": \"user-42\"}', true)")
            token, number = conn.execute(
                "SELECT token, document_number FROM api.reserve_number('COR')"
            ).fetchone() or (None, None)
            assert conn.execute("SELECT api.confirm_number(%s)", (token,)).fetchone() == (number,)
        with (
            psycopg.connect(cluster.dsn(service.dbname), autocommit=True) as conn,
            conn.transaction(),
            pytest.raises(psycopg.errors.InsufficientPrivilege),
        ):
            conn.execute("SET LOCAL ROLE anon")
            conn.execute("SELECT api.reserve_number('COR')")
        with psycopg.connect(admin, autocommit=True) as conn:
            actor = conn.execute(
                "SELECT actor FROM docnum.ledger WHERE document_number = %s", (number,)
            ).fetchone()
            assert actor == ("user-42",)


# -- whatever roles exist: migrate succeeds safely, or stops with a hint that works --------------------------

DOCNUM_ROLES = ("docnum_owner", "docnum_reader", "docnum_app", "docnum_admin")
ROLE_OPTIONS = {"docnum_owner": " NOSUPERUSER NOCREATEDB NOCREATEROLE NOINHERIT"}


@dataclass(frozen=True)
class RoleState:
    """Roles as an earlier install, an administrator or another database's installer may have left them."""

    createrole: bool  # the installer's attribute
    inherit: bool  # the installer's INHERIT attribute
    made_by: dict[str, str]  # docnum role -> "superuser" | "installer" | "other" (absent: not made)
    owner_grant: (
        tuple[bool, bool] | None
    )  # an administrator's GRANT docnum_owner TO installer: (inherit, set)
    admin_in: tuple[bool, bool]  # docnum_admin already in (docnum_app, docnum_reader), when both exist
    self_grant: bool  # 16+: the installer's createrole_self_grant is 'set, inherit' (as some services set it)


@st.composite
def role_states(draw: st.DrawFn) -> RoleState:
    createrole = draw(st.booleans())
    makers = ["superuser", "other", *(["installer"] if createrole else [])]
    made_by = {role: draw(st.sampled_from(makers)) for role in DOCNUM_ROLES if draw(st.booleans())}
    owner_grant = None
    if "docnum_owner" in made_by and draw(st.booleans()):
        owner_grant = (draw(st.booleans()), draw(st.booleans()))
    admin_in = (draw(st.booleans()), draw(st.booleans()))
    return RoleState(createrole, draw(st.booleans()), made_by, owner_grant, admin_in, draw(st.booleans()))


def _apply(cluster: PrivateCluster, state: RoleState) -> str:
    """Set `state` up; return the installer's dsn to a new database it owns."""
    with cluster.connect(autocommit=True) as su:
        su.execute(
            sql.SQL("CREATE ROLE prop_installer LOGIN {} {} PASSWORD {}").format(
                sql.SQL("CREATEROLE" if state.createrole else "NOCREATEROLE"),
                sql.SQL("INHERIT" if state.inherit else "NOINHERIT"),
                sql.Literal(PASSWORD),
            )
        )
        su.execute("CREATE ROLE prop_other LOGIN CREATEROLE PASSWORD 'other-secret'")
        if state.self_grant and cluster.major >= 16:
            su.execute("ALTER ROLE prop_installer SET createrole_self_grant = 'set, inherit'")
        su.execute("CREATE DATABASE prop_db OWNER prop_installer")
    makers = {
        "superuser": cluster.dsn(),
        "installer": cluster.dsn("postgres", "prop_installer", PASSWORD),
        "other": cluster.dsn("postgres", "prop_other", "other-secret"),
    }
    for role, maker in state.made_by.items():
        with psycopg.connect(makers[maker], autocommit=True) as conn:
            conn.execute(f"CREATE ROLE {role} NOLOGIN{ROLE_OPTIONS.get(role, '')}")
    with cluster.connect(autocommit=True) as su:
        if state.owner_grant is not None:
            inherit, set_ = state.owner_grant
            options = f" WITH INHERIT {inherit}, SET {set_}" if cluster.major >= 16 else ""
            su.execute(f"GRANT docnum_owner TO prop_installer{options}")
        for role, present in zip(("docnum_app", "docnum_reader"), state.admin_in, strict=True):
            if present and {role, "docnum_admin"} <= state.made_by.keys():
                su.execute(f"GRANT {role} TO docnum_admin")
    return cluster.dsn("prop_db", "prop_installer", PASSWORD)


def _roles_snapshot(cluster: PrivateCluster) -> tuple[Any, ...]:
    with cluster.connect(autocommit=True) as su:
        roles = su.execute("SELECT rolname FROM pg_roles WHERE rolname LIKE 'docnum%' ORDER BY 1").fetchall()
        members = su.execute(
            "SELECT roleid::regrole::text, member::regrole::text, grantor::regrole::text, admin_option"
            + (", inherit_option, set_option" if cluster.major >= 16 else "")
            + " FROM pg_auth_members WHERE roleid::regrole::text LIKE 'docnum%' ORDER BY 1, 2, 3"
        ).fetchall()
    return tuple(roles), tuple(members)


@settings(max_examples=15, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(state=role_states())
def test_property_migrate_succeeds_safely_or_stops_with_a_hint_that_works(
    shared_cluster: PrivateCluster, state: RoleState
) -> None:
    """Whatever docnum roles exist, made by whom, with whatever memberships: `migrate` by a role that owns the
    database either installs, leaving the installer without docnum_owner's rights, or fails with NB013 and
    changes nothing; running each hint's statement as a superuser makes it go through, in a few steps; and
    the doctor's verdict beforehand (the same requirements, checked without applying them) was right."""
    cluster = shared_cluster
    reset(cluster)
    dsn = _apply(cluster, state)
    with psycopg.connect(dsn) as conn:  # what `docnum doctor` reports, in a transaction rolled back
        conn.execute((schema.migrations_dir() / "session.sql").read_bytes())
        verdict = [ok for _, ok, _, _ in conn.execute("SELECT * FROM pg_temp.docnum_installer(false)")]
        conn.rollback()
    first_attempt = True
    for _ in range(8):
        before = _roles_snapshot(cluster)
        try:
            schema.migrate(dsn)
        except psycopg.Error as error:
            assert error.sqlstate == "NB013", error
            assert not (first_attempt and all(ok is not False for ok in verdict)), "the doctor said it may"
            first_attempt = False
            assert not installed(dsn)
            assert _roles_snapshot(cluster) == before
            hint = error.diag.message_hint or ""
            statement = hint.split(":", 1)[1].split(";", 1)[0].strip()
            with cluster.connect("prop_db", autocommit=True) as su:
                su.execute(statement)
            continue
        assert not (first_attempt and False in verdict), "the doctor said it may not"
        break
    else:
        pytest.fail(f"migrate still refused after eight hints: {state}")
    assert installed(dsn)
    with psycopg.connect(dsn, autocommit=True) as conn:
        assert conn.execute("SELECT pg_has_role('docnum_owner', 'USAGE')").fetchone() == (False,)
        assert conn.execute(
            "SELECT pg_has_role('docnum_admin', 'docnum_app', 'MEMBER'),"
            " pg_has_role('docnum_admin', 'docnum_reader', 'MEMBER')"
        ).fetchone() == (True, True)
    if cluster.major < 16 and state.owner_grant is None:
        assert not [
            m for m in _roles_snapshot(cluster)[1] if m[0] == "docnum_owner" and m[1] == "prop_installer"
        ]
