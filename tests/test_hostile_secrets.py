"""Issue 17: no credential reaches the terminal, at any verbosity.

Fake but realistic credentials (an ``AKIA…`` key id, a secret, a session token) talk to
the local moto server; every command runs with ``-v`` (botocore's DEBUG lines carry the
signed request: ``X-Amz-Security-Token``, ``Credential=<key id>/…``, ``Signature=…``) and
everything it writes to stdout and stderr is searched for them.
"""

from __future__ import annotations

import logging
import os
import subprocess
import sys
from pathlib import Path

import pytest

from infra.logs import RedactingFilter, redact_text

ROOT = Path(__file__).resolve().parents[1]
KEY_ID = "AKIAZ7EXAMPLEKEY0017"
SECRET = "wJalrXUtnFEMIK7MDENGbPxRfiCYsecret0017"
TOKEN = "FQoGZXIvYXdzEJr1sessiontokenEXAMPLE0017"
SECRETS = (KEY_ID, SECRET, TOKEN)

SAMPLES = [
    # botocore.endpoint DEBUG: the prepared request's headers
    (
        "headers={'X-Amz-Date': b'20261203T035135Z', 'X-Amz-Security-Token': b'" + TOKEN + "', "
        "'Authorization': b'AWS4-HMAC-SHA256 Credential=" + KEY_ID + "/20261203/us-east-1/s3/"
        "aws4_request, SignedHeaders=host;x-amz-date, Signature=e0c727b82fbe86add35f9c78ee2cc520"
        "59a45ca6f106f0bb344c82ccdbc1aeb6'}",
        ["20261203T035135Z", "aws4_request"],
    ),
    # botocore.auth DEBUG: canonical request and signature lines
    ("x-amz-date:20261203T035135Z\nx-amz-security-token:" + TOKEN, ["x-amz-date"]),
    ("Signature:\ne0c727b82fbe86add35f9c78ee2cc52059a45ca6f106f0bb344c82ccdbc1aeb6", []),
    # presigned URL (S3) and a signed GCS URL
    (
        "https://b.s3.amazonaws.com/k.svs?X-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-Credential="
        + KEY_ID
        + "%2F20261203%2Fus-east-1%2Fs3%2Faws4_request&X-Amz-Security-Token="
        + TOKEN
        + "&X-Amz-Signature=aeeed9bbccd4d02ee5c0109b86d86835f995330da4c265957d157751f604d404",
        ["b.s3.amazonaws.com/k.svs"],
    ),
    (
        "https://storage.googleapis.com/b/o?X-Goog-Credential=svc%40p.iam&X-Goog-Signature="
        + SECRET,
        ["storage.googleapis.com/b/o"],
    ),
    # gcsfs / Ray bearer tokens, OAuth fields, Ray's token variable
    ("Authorization: Bearer ya29." + SECRET, []),
    (
        "{'access_token': '"
        + TOKEN
        + "', 'refresh_token': '"
        + SECRET
        + "', 'token_type': 'Bearer'}",
        ["token_type"],
    ),
    ("RAY_AUTH_TOKEN=" + TOKEN, ["RAY_AUTH_TOKEN"]),
    # s3fs options echoed in a repr, and a URL with a password
    (
        "{'key': '" + KEY_ID + "', 'secret': '" + SECRET + "', 'token': '" + TOKEN + "', "
        "'endpoint_url': 'http://127.0.0.1:9000'}",
        ["http://127.0.0.1:9000"],
    ),
    ("s3://" + KEY_ID + ":" + SECRET + "@bucket/slides/a.svs", ["bucket/slides/a.svs"]),
    ("no credentials here: s3://bucket/slides/a.svs", ["s3://bucket/slides/a.svs"]),
]


@pytest.mark.parametrize(("text", "kept"), SAMPLES)
def test_every_credential_format_is_masked(text: str, kept: list[str]) -> None:
    out = redact_text(text)
    for secret in (
        *SECRETS,
        "e0c727b82fbe86add35f9c78ee2cc52059a45ca6f106f0bb344c82ccdbc1aeb6",
        "aeeed9bbccd4d02ee5c0109b86d86835f995330da4c265957d157751f604d404",
    ):
        assert secret not in out
    for part in kept:
        assert part in out, f"redaction ate {part!r}: {out}"


def test_tracebacks_in_log_records_are_masked(caplog) -> None:
    handler = logging.StreamHandler(stream := __import__("io").StringIO())
    handler.addFilter(RedactingFilter())
    log = logging.getLogger("test.hostile.secrets")
    log.addHandler(handler)
    try:
        try:
            raise OSError(f"403 for s3://bucket/x?X-Amz-Security-Token={TOKEN}")
        except OSError:
            log.exception("read failed with key=%s", KEY_ID)
    finally:
        log.removeHandler(handler)
    text = stream.getvalue()
    assert "Traceback" in text and "read failed" in text
    assert TOKEN not in text and KEY_ID not in text


# ---- every command, -v, against moto ---------------------------------------------------------
@pytest.fixture(scope="module")
def hostile_env(moto_server: str, synthetic_svs, tmp_path_factory) -> dict[str, str]:
    import s3fs

    from features.store import FeatureStore

    options = {
        "key": KEY_ID,
        "secret": SECRET,
        "token": TOKEN,
        "endpoint_url": moto_server,
        "skip_instance_cache": True,
    }
    fs = s3fs.S3FileSystem(**options)
    fs.mkdir("hostile-secrets")
    fs.pipe("hostile-secrets/slides/a.svs", Path(synthetic_svs.path).read_bytes())
    FeatureStore.open("s3://hostile-secrets/store", options, create=True)
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    env.update(
        AWS_ACCESS_KEY_ID=KEY_ID,
        AWS_SECRET_ACCESS_KEY=SECRET,
        AWS_SESSION_TOKEN=TOKEN,
        AWS_DEFAULT_REGION="us-east-1",
        AWS_ENDPOINT_URL=moto_server,
        SLIDEBANK_TEST_ENDPOINT=moto_server,
        COLUMNS="200",
    )
    return env


def _slidebank(env: dict[str, str], *args: str, timeout: int = 300) -> str:
    proc = subprocess.run(
        [sys.executable, "-c", "from slidebank.cli import main; main()", "-v", *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    return f"exit {proc.returncode}\n{proc.stdout}\n{proc.stderr}"


def _assert_clean(output: str) -> None:
    for secret in SECRETS:
        assert secret not in output, (
            f"{secret[:6]}… printed:\n"
            + "\n".join(line for line in output.splitlines() if secret in line)[:2000]
        )


@pytest.mark.s3
@pytest.mark.parametrize(
    "command",
    [
        ["info", "s3://hostile-secrets/slides/a.svs", "--json"],
        # ~15 s each (a fresh interpreter): the default suite keeps two, the rest run with slow
        pytest.param(
            ["tissue", "s3://hostile-secrets/slides/a.svs", "--json"], marks=pytest.mark.slow
        ),
        pytest.param(
            ["query", "slides", "--store", "s3://hostile-secrets/store", "--json"],
            marks=pytest.mark.slow,
        ),
        pytest.param(
            [
                "query",
                "sql",
                "SELECT count(*) AS n FROM slides",
                "--store",
                "s3://hostile-secrets/store",
            ],
            marks=pytest.mark.slow,
        ),
        ["info", "s3://hostile-secrets/slides/missing.svs"],  # an error path too
    ],
)
def test_verbose_commands_print_no_credentials(hostile_env, tmp_path: Path, command) -> None:
    endpoint = hostile_env["SLIDEBANK_TEST_ENDPOINT"]
    extra = ["-s", f"endpoint_url={endpoint}"]
    if command[0] in ("info", "tissue"):
        extra += ["--out", str(tmp_path / "out")]
    output = _slidebank(hostile_env, *command, *extra)
    if command[0] != "query":  # the store is read by Lance's own (Rust) S3 client
        assert "botocore" in output, "DEBUG logging reached the terminal (the test must see it)"
    _assert_clean(output)


@pytest.mark.s3
def test_credentials_given_as_storage_options_are_not_echoed(hostile_env, tmp_path: Path) -> None:
    endpoint = hostile_env["SLIDEBANK_TEST_ENDPOINT"]
    env = {k: v for k, v in hostile_env.items() if not k.startswith("AWS_")}
    output = _slidebank(
        env,
        "info",
        "s3://hostile-secrets/slides/a.svs",
        "--out",
        str(tmp_path),
        "-s",
        f"endpoint_url={endpoint}",
        "-s",
        f"key={KEY_ID}",
        "-s",
        f"secret={SECRET}",
        "-s",
        f"token={TOKEN}",
    )
    assert output.startswith("exit 0"), output[-2000:]
    _assert_clean(output)


@pytest.mark.s3
@pytest.mark.slow
def test_verbose_ingest_prints_no_credentials(hostile_env, tmp_path: Path) -> None:
    endpoint = hostile_env["SLIDEBANK_TEST_ENDPOINT"]
    output = _slidebank(
        hostile_env,
        "ingest",
        "s3://hostile-secrets/slides/*.svs",
        "--store",
        "s3://hostile-secrets/store-ingest",
        "--stain",
        "none",
        "--no-dashboard",
        "-s",
        f"endpoint_url={endpoint}",
        timeout=600,
    )
    assert output.startswith("exit 0"), output[-3000:]
    _assert_clean(output)
