"""Camera (and MQTT broker) credentials from a file, never from the command line, the environment or labels.

``serve --credentials FILE`` (in a unit's container: a read-only file of mode 0400 that ``deploy``
mounts at :data:`CONTAINER_PATH`) names each camera's secret by camera name::

    {"cameras": {"north": {"username": "admin", "password": "..."},
                 "south": {"url": "rtsp://10.0.12.21/stream1?user=admin&pwd=..."}}}

(on a workstation the same tables in TOML are accepted: ``[cameras.north]``). A unit that publishes its
counts (``serve --publish``) finds the broker's login there too: ``"broker": {"username": ..., "password": ...,
"ca": "-----BEGIN CERTIFICATE-----..."}`` (:func:`load_broker_credentials`). ``username``/``password``
are put into the camera's URL as its userinfo; ``url`` replaces the URL whole (for cameras that take
their credentials in the query string). The camera's ``--source NAME=URL`` stays credential-free, so
``docker inspect``, ``ps`` and every log show only it. Every secret read is registered with
:func:`toolchain.redaction.register_secret`, so it is masked in any text that still quotes it.

On the workstation the same file may also hold image registries' logins, by the registry's ``HOST[:PORT]``:
``[registries."registry.example.org:5000"]`` with ``username``, ``password`` and optionally ``ca`` (the PEM
of a private CA) (:func:`load_registry_credentials`): ``package --push`` logs in with them, and ``deploy``
hands them to a unit's engine in the pull request alone. They never go into a unit's own file (:func:`to_json`).

Standard library only, Python 3.8 compatible (the roadside runtime).
"""

from __future__ import annotations

import io
import json
import re
import tarfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, NamedTuple, Optional
from urllib.parse import parse_qsl, quote, urlsplit, urlunsplit

from toolchain.errors import BadInputError, InputNotFoundError
from toolchain.publish.config import BrokerCredentials, broker_credentials_from
from toolchain.redaction import is_secret_parameter, register_secret

CONTAINER_DIR = "/run/secrets/toolchain"
CONTAINER_PATH = CONTAINER_DIR + "/cameras.json"
ENV = "TOOLCHAIN_CAMERA_CREDENTIALS"
_FIELDS = {"username", "password", "url"}
_REGISTRY_FIELDS = ("username", "password", "ca")
_REGISTRY_KEY = re.compile(r"^[A-Za-z0-9.-]+(:[0-9]{1,5})?$|^\[[0-9a-fA-F:]+\](:[0-9]{1,5})?$")


@dataclass(frozen=True)
class CameraCredential:
    """One camera's secret: a username/password pair, or a whole URL that carries it."""

    username: str = ""
    password: str = ""
    url: str = ""

    def apply(self, url: str) -> str:
        """``url`` with this credential in it (the replacement URL, or the userinfo set)."""
        if self.url:
            return self.url
        parts = urlsplit(url)
        if not parts.hostname:
            raise BadInputError(f"a username/password can only be given to a network camera URL, not {url.split('?')[0]!r}")
        userinfo = quote(self.username, safe="")
        if self.password:
            userinfo += ":" + quote(self.password, safe="")
        host = parts.netloc.rpartition("@")[2]
        return urlunsplit((parts.scheme, f"{userinfo}@{host}", parts.path, parts.query, parts.fragment))


@dataclass(frozen=True)
class RegistryCredential:
    """An image registry's login (basic username/password, as ``docker login`` takes it) and, for a registry with
    a private CA, that CA's certificate (PEM text). Neither secret shows in ``repr``."""

    username: str = ""
    password: str = ""
    ca_pem: str = ""

    def auth_config(self) -> Optional[Dict[str, str]]:
        """What the Engine API takes as ``X-Registry-Auth`` (the Docker SDK's ``auth_config``); None without a login."""
        if not self.username:
            return None
        return {"username": self.username, "password": self.password}

    def __repr__(self) -> str:
        user = "***" if self.username else "''"
        password = "***" if self.password else "''"
        ca = "<{} characters>".format(len(self.ca_pem)) if self.ca_pem else "''"
        return "RegistryCredential(username={}, password={}, ca_pem={})".format(user, password, ca)

    __str__ = __repr__


def registry_credentials_from(document: Any) -> Dict[str, RegistryCredential]:
    """The ``registries`` table of a credentials document: ``{HOST[:PORT]: RegistryCredential}`` (``{}`` without one).

    Every password is registered with :func:`toolchain.redaction.register_secret`.

    Raises:
        BadInputError: ``registries`` is not a table of tables, a registry is not named ``HOST[:PORT]``, a key is
            unknown (named, its value never shown), a value is not a string, a password without a username (or a
            username without a password), or a ``ca`` that is not a PEM certificate.
    """
    if not isinstance(document, dict):
        raise BadInputError("the credentials document is not a table/object: check the credentials file")
    table = document.get("registries")
    if table is None:
        return {}
    if not isinstance(table, dict):
        raise BadInputError('the credentials file\'s \'registries\' entry must be a table of registries by HOST[:PORT], '
                            'e.g. [registries."registry.example.org:5000"] with username, password and ca')
    found: Dict[str, RegistryCredential] = {}
    for name, entry in table.items():
        where = "registries.{}".format(json.dumps(str(name)))
        if not isinstance(name, str) or not _REGISTRY_KEY.match(name):
            raise BadInputError("{} in the credentials file: name the registry as HOST[:PORT], as `package --push` "
                                "and the fleet's `registry` do (no scheme, path or credentials)".format(
                                    "a registry" if "@" in str(name) else where))
        if not isinstance(entry, dict):
            raise BadInputError("{} in the credentials file must be a table with username, password and ca".format(where))
        unknown = sorted(str(key) for key in entry if key not in _REGISTRY_FIELDS)
        if unknown:
            raise BadInputError("unknown key(s) {} in {} of the credentials file: it takes only {}".format(
                ", ".join(repr(k) for k in unknown), where, ", ".join(_REGISTRY_FIELDS)))
        values = {}
        for key in _REGISTRY_FIELDS:
            value = entry.get(key, "")
            if not isinstance(value, str):
                raise BadInputError("{}.{} in the credentials file must be a string".format(where, key))
            values[key] = value
        register_secret(values["password"])
        if bool(values["password"]) != bool(values["username"]):
            raise BadInputError("{} in the credentials file has a {} but no {}: a registry login takes both".format(
                where, *(("password", "username") if values["password"] else ("username", "password"))))
        ca = values["ca"].strip()
        if ca and "-----BEGIN CERTIFICATE-----" not in ca:
            raise BadInputError("{}.ca in the credentials file is not a PEM certificate: paste the CA certificate "
                                "text, from -----BEGIN CERTIFICATE----- to -----END CERTIFICATE-----".format(where))
        if not values["username"] and not ca:
            raise BadInputError("{} in the credentials file is empty: give username and password, or ca".format(where))
        found[name] = RegistryCredential(username=values["username"], password=values["password"],
                                         ca_pem=ca + "\n" if ca else "")
    return found


def _parse(path: Path, text: str) -> Any:
    if path.suffix.lower() == ".toml":
        try:
            import tomllib  # novermin - Python 3.11+, guarded; the container's file is JSON
        except ImportError as exc:
            raise BadInputError(f"{path}: TOML needs Python 3.11; write the credentials as JSON") from exc
        try:
            return tomllib.loads(text)
        except tomllib.TOMLDecodeError as exc:
            raise BadInputError(f"{path} is not valid TOML: {exc}") from None
    try:
        return json.loads(text)
    except ValueError as exc:
        raise BadInputError(f"{path} is not valid JSON ({exc.__class__.__name__} at line "
                            f"{getattr(exc, 'lineno', '?')}); fix the credentials file") from None


def parse_credentials(data: Any, source: str) -> Dict[str, CameraCredential]:
    """Validate ``{"cameras": {NAME: {...}}, "broker": {...}, "registries": {HOST: {...}}}`` and register every secret
    in it for redaction; the cameras' credentials (the ``broker`` and ``registries`` tables, checked here too, are
    :func:`load_broker_credentials`'s and :func:`load_registry_credentials`').

    Error messages never quote a value, only names.
    """
    if not isinstance(data, dict) or set(data) - {"cameras", "broker", "registries"} or \
            not isinstance(data.get("cameras", {}), dict):
        raise BadInputError(f"{source}: expected a table 'cameras' of camera names, e.g. [cameras.north] with "
                            "username/password or url, and optionally a table 'broker' (username, password, ca) and "
                            "a table 'registries' of registry logins by HOST[:PORT]")
    try:
        broker_credentials_from(data)
        registry_credentials_from(data)
    except BadInputError as exc:
        raise BadInputError(f"{source}: {exc}") from None
    credentials: Dict[str, CameraCredential] = {}
    for name, entry in data.get("cameras", {}).items():
        if not isinstance(entry, dict) or not entry or set(entry) - _FIELDS or \
                not all(isinstance(v, str) for v in entry.values()):
            raise BadInputError(f"{source}: camera {name!r} must have string fields from {sorted(_FIELDS)}")
        if "url" in entry and ({"username", "password"} & set(entry)):
            raise BadInputError(f"{source}: camera {name!r} has both url and username/password; give one")
        if "url" not in entry and not entry.get("username") and not entry.get("password"):
            raise BadInputError(f"{source}: camera {name!r} has an empty username and password")
        credential = CameraCredential(username=entry.get("username", ""), password=entry.get("password", ""),
                                      url=entry.get("url", ""))
        _register(credential)
        credentials[str(name)] = credential
    return credentials


def _register(credential: CameraCredential) -> None:
    register_secret(credential.password)
    if not credential.password:
        register_secret(credential.username)  # a bare token as userinfo: rtsp://TOKEN@camera
    if credential.url:
        parts = urlsplit(credential.url)
        register_secret(parts.password)
        if parts.username and not parts.password:
            register_secret(parts.username)
        for key, value in parse_qsl(parts.query, keep_blank_values=True):
            if is_secret_parameter(key):
                register_secret(value)


class CredentialTables(NamedTuple):
    """Every table of one credentials file, read and checked once."""

    cameras: Dict[str, CameraCredential]
    broker: Optional[BrokerCredentials]
    registries: Dict[str, RegistryCredential]


def load_credential_tables(path: Optional[Path]) -> CredentialTables:
    """The cameras', the broker's and the registries' credentials in ``path`` (JSON, or TOML on Python 3.11+), from
    one read of the file; empty tables for None. Every secret in it is registered for redaction.

    Raises:
        InputNotFoundError: the file is missing or unreadable.
        BadInputError: it is malformed (the message names the camera or table, never the secret).
    """
    if path is None:
        return CredentialTables({}, None, {})
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise InputNotFoundError(f"cannot read the credentials file {path}: {exc.strerror or exc}; check the "
                                 "path and that the service user may read it (mode 0400, owned by the service user)") from None
    data = _parse(path, text)
    cameras = parse_credentials(data, str(path))  # checks the whole document and registers every secret in it
    return CredentialTables(cameras, broker_credentials_from(data), registry_credentials_from(data))


def load_credentials(path: Optional[Path]) -> Dict[str, CameraCredential]:
    """The cameras' credentials in ``path`` (JSON, or TOML on Python 3.11+); ``{}`` for None.

    Raises:
        InputNotFoundError: the file is missing or unreadable.
        BadInputError: it is malformed (the message names the camera, never the secret).
    """
    return load_credential_tables(path).cameras


def load_broker_credentials(path: Optional[Path]) -> Optional[BrokerCredentials]:
    """The MQTT broker's login (and private CA) from the same file's ``broker`` table; None without one."""
    return load_credential_tables(path).broker


def load_registry_credentials(path: Optional[Path]) -> Dict[str, RegistryCredential]:
    """The image registries' logins (and private CAs) from the file's ``registries`` table, by ``HOST[:PORT]``;
    ``{}`` for None or a file without one.

    Raises:
        InputNotFoundError: the file is missing or unreadable.
        BadInputError: it is malformed (the message names the table, never the secret).
    """
    return load_credential_tables(path).registries


def to_json(credentials: Dict[str, CameraCredential], broker: Optional[BrokerCredentials] = None) -> str:
    """The file ``serve`` reads, for these cameras (and the broker's login, when the unit publishes)."""
    cameras = {}
    for name, c in sorted(credentials.items()):
        cameras[name] = {"url": c.url} if c.url else {k: v for k, v in (("username", c.username),
                                                                         ("password", c.password)) if v}
    document: Dict[str, Any] = {"cameras": cameras}
    if broker is not None:
        document["broker"] = {k: v for k, v in (("username", broker.username), ("password", broker.password),
                                                ("ca", broker.ca_pem)) if v}
    return json.dumps(document, sort_keys=True)


def container_archive(payload: str, *, uid: int, gid: int, path: str = CONTAINER_PATH) -> bytes:
    """A tar archive that ``put_archive`` at ``/`` turns into ``path`` (default :data:`CONTAINER_PATH`) holding
    ``payload``: mode 0400, owned by ``uid:gid`` (the user the container runs as), so only that user can read it.

    ``bench --on`` gives its short-lived container the camera secrets this way (the container and the
    file go when the run ends), and ``deploy`` fills a unit's credentials volume with it; nothing of them reaches a command line, an environment variable or a label.
    """
    data = payload.encode("utf-8")
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as archive:
        info = tarfile.TarInfo(path.lstrip("/"))
        info.size, info.mode, info.uid, info.gid, info.mtime = len(data), 0o400, uid, gid, int(time.time())
        archive.addfile(info, io.BytesIO(data))
    return buffer.getvalue()
