"""The one redaction rule: every shape of URL credential, inside URLs and inside free text."""

from __future__ import annotations

import pytest

from toolchain.redaction import has_credentials, redact_url, register_secret, scrub, scrub_data


@pytest.mark.parametrize(("url", "expected"), [
    ("rtsp://admin:PASSWORD@127.0.0.1:1/stream1", "rtsp://***@127.0.0.1:1/stream1"),
    ("rtsp://tokenABC@cam.local/live", "rtsp://***@cam.local/live"),  # user-only userinfo is a bearer token
    ("http://cam/video.cgi?user=admin&pwd=hunter22&channel=1", "http://cam/video.cgi?user=***&pwd=***&channel=1"),
    ("rtsp://cam/h264?loginuse=admin&loginpas=pw123", "rtsp://cam/h264?loginuse=***&loginpas=***"),
    ("https://bucket.s3/x?X-Amz-Signature=abc&X-Amz-Credential=k&v=1",
     "https://bucket.s3/x?X-Amz-Signature=***&X-Amz-Credential=***&v=1"),
    ("ssh://deploy:pw@10.0.12.7", "ssh://***@10.0.12.7"),
    ("unix:///tmp/docker.sock", "unix:///tmp/docker.sock"),  # unchanged, byte for byte
    ("rtsp://cam/stream?channel=1&subtype=0", "rtsp://cam/stream?channel=1&subtype=0"),
    ("/videos/a.mp4", "/videos/a.mp4"),
    ("synthetic:640x352@30", "synthetic:640x352@30"),
])
def test_redact_url_removes_userinfo_and_secret_parameters(url: str, expected: str) -> None:
    assert redact_url(url) == expected
    assert has_credentials(url) == (url != expected)


def test_scrub_finds_urls_and_parameters_inside_messages() -> None:
    message = ("[Errno 111] Connection refused: 'rtsp://admin:S3cr3t-1@127.0.0.1:1/stream1'; retrying "
               "http://cam/x?pwd=Zz9-secret&ch=2 and (rtsp://tok-77@host/a)")
    text = scrub(message)
    assert "S3cr3t-1" not in text and "Zz9-secret" not in text and "tok-77" not in text
    assert "rtsp://***@127.0.0.1:1/stream1" in text and "ch=2" in text
    # a parameter cut off from its URL (a terminal's highlighting splits the URL) is still masked
    assert scrub("host\x1b[0m:554/x?user=admin&password=Ab12cd") == "host\x1b[0m:554/x?user=***&password=***"


def test_registered_secrets_are_masked_in_any_form() -> None:
    register_secret("p@ss w0rd!")
    assert scrub("decoded p@ss w0rd! encoded p%40ss%20w0rd%21") == "decoded *** encoded ***"
    register_secret("abc")  # too short to mask safely: ordinary text stays readable
    assert scrub("abc") == "abc"


def test_scrub_data_walks_json_values_keys_included() -> None:
    data = {"url": "rtsp://a:b@h/s", "rtsp://x:y@h/k": [1, "rtsp://c:d@h", ("http://h?token=t",)], "n": 3.5}
    assert scrub_data(data) == {"url": "rtsp://***@h/s", "rtsp://***@h/k": [1, "rtsp://***@h", ("http://h?token=***",)],
                                "n": 3.5}
