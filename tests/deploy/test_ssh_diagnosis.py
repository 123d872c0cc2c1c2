"""How toolchain runs ``ssh`` for ssh:// units, and how it words what ssh said (no server needed).

The stderr samples are OpenSSH 9.2's own words (Debian bookworm), captured from tests/ssh_server.py's sshd.
The same paths run for real in tests/docker/test_ssh_unit.py.
"""

from __future__ import annotations

import pytest

pytest.importorskip("docker.transport.sshconn")  # docker[ssh], in the [deploy] extra

from toolchain.docker_engine import _explain_ssh  # noqa: E402
from toolchain.docker_ssh import ssh_args  # noqa: E402

KNOWN = "/home/op/.ssh/known_hosts"
CONFIG = {"userknownhostsfile": [f"{KNOWN} /home/op/.ssh/known_hosts2"], "hostname": ["10.0.12.7"], "port": ["2222"]}

CHANGED = f"""@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@
@    WARNING: REMOTE HOST IDENTIFICATION HAS CHANGED!     @
@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@
IT IS POSSIBLE THAT SOMEONE IS DOING SOMETHING NASTY!
Someone could be eavesdropping on you right now (man-in-the-middle attack)!
It is also possible that a host key has just been changed.
The fingerprint for the ED25519 key sent by the remote host is
SHA256:+VAyLBRoYYxdmdIP+ZgOYmuJuILVrcK+jo3oP28KoGQ.
Please contact your system administrator.
Add correct host key in {KNOWN} to get rid of this message.
Offending ED25519 key in {KNOWN}:7
  remove with:
  ssh-keygen -f "{KNOWN}" -R "[10.0.12.7]:2222"
Host key for [10.0.12.7]:2222 has changed and you have requested strict checking.
Host key verification failed.
"""


def test_every_ssh_gets_batch_mode_and_strict_host_key_checking_before_the_host() -> None:
    args = ssh_args("ssh://deploy@10.0.12.7:2222", connect_timeout=20)
    assert args[0] == "ssh" and args[-2:] == ["--", "10.0.12.7"]
    options = args[: args.index("-l")]
    for option in ("BatchMode=yes", "StrictHostKeyChecking=yes", "ConnectTimeout=20", "ServerAliveInterval=10"):
        assert option in options
    assert args[args.index("-l") + 1] == "deploy" and args[args.index("-p") + 1] == "2222"
    bare = ssh_args("ssh://gantry-14")  # user, port and the way there (ProxyJump) come from ~/.ssh/config
    assert "-l" not in bare and "-p" not in bare and bare[-1] == "gantry-14"


def test_a_changed_host_key_is_explained_with_the_pin_to_fix() -> None:
    text, host_key = _explain_ssh(CHANGED, CONFIG)
    assert host_key
    assert "the ssh host key of [10.0.12.7]:2222 has changed (Host key verification failed)" in text
    assert "SHA256:+VAyLBRoYYxdmdIP+ZgOYmuJuILVrcK+jo3oP28KoGQ" in text and f"{KNOWN} (line 7)" in text
    assert f'ssh-keygen -f "{KNOWN}" -R "[10.0.12.7]:2222"' in text and "intercepting" in text


def test_an_unknown_host_key_is_explained_with_where_to_pin_it() -> None:
    stderr = ("No ED25519 host key is known for [10.0.12.7]:2222 and you have requested strict checking.\n"
              "Host key verification failed.\n")
    text, host_key = _explain_ssh(stderr, CONFIG)
    assert host_key and "is not pinned" in text and "Host key verification failed" in text
    assert f"Add it to {KNOWN} " in text and "ssh-keyscan -p 2222 10.0.12.7" in text


def test_other_failures_are_ssh_s_last_words() -> None:
    text, host_key = _explain_ssh("deploy@10.0.12.7: Permission denied (publickey).\n", CONFIG)
    assert not host_key and text == "deploy@10.0.12.7: Permission denied (publickey)."


def test_identity_file_paths_are_masked() -> None:
    from toolchain.docker_engine import _mask_identity_files

    said = ("Permissions 0644 for '/srv/keys/unit_ed25519' are too open. / Load key \"/srv/keys/unit_ed25519\": bad "
            "permissions / Warning: Identity file /opt/other/id_rsa not accessible: No such file or directory.")
    masked = _mask_identity_files(said, {"identityfile": ["/srv/keys/unit_ed25519"]})
    assert "unit_ed25519" not in masked and "/opt/other" not in masked and "id_rsa" not in masked, masked
    assert 'Load key "<identity file>": bad permissions' in masked
