"""Deploy-time refusal of a TLS Secret, on certificates made with openssl."""

from __future__ import annotations

import base64

import pytest

from components.mysql._tls import (
    pymysql_ssl,
    replication_tls_clause,
    secret_data_problems,
    tls_secret_problems,
)
from tests.support.certs import Pair, issue, make_ca


@pytest.fixture(scope="module")
def material(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Pair]:
    base = tmp_path_factory.mktemp("certs")
    ca = make_ca(base, "ca")
    return {"ca": ca, "other_ca": make_ca(base, "other-ca"), "good": issue(ca, base, "good"),
            "other": issue(ca, base, "other"), "expired": issue(ca, base, "expired", days=-1)}


def secret(material: dict[str, Pair], cert: str = "good", key: str = "good",
           ca: str = "ca") -> dict[str, str]:
    return {"tls.crt": material[cert].cert.read_text(), "tls.key": material[key].key.read_text(),
            "ca.crt": material[ca].cert.read_text()}


def test_a_good_secret_passes(material: dict[str, Pair]) -> None:
    assert tls_secret_problems("ns/tls", secret(material)) == []


@pytest.mark.parametrize("key", ["tls.crt", "tls.key", "ca.crt"])
def test_a_missing_key_is_named(material: dict[str, Pair], key: str) -> None:
    data = secret(material)
    del data[key]
    assert tls_secret_problems("ns/tls", data) == [f"Secret ns/tls: missing key {key}"]


def test_a_key_that_does_not_match_is_named(material: dict[str, Pair]) -> None:
    assert tls_secret_problems("ns/tls", secret(material, key="other")) == [
        "Secret ns/tls: tls.key does not match the certificate in tls.crt"]


def test_an_expired_certificate_is_named(material: dict[str, Pair]) -> None:
    problems = tls_secret_problems("ns/tls", secret(material, cert="expired", key="expired"))
    assert len(problems) == 1
    assert problems[0].startswith("Secret ns/tls: tls.crt expired at ")


def test_a_certificate_from_another_ca_is_named(material: dict[str, Pair]) -> None:
    assert tls_secret_problems("ns/tls", secret(material, ca="other_ca")) == [
        "Secret ns/tls: tls.crt is not signed by the CA in ca.crt"]


def test_garbage_is_named(material: dict[str, Pair]) -> None:
    data = {**secret(material), "tls.key": "not a key"}
    assert tls_secret_problems("ns/tls", data) == [
        "Secret ns/tls: tls.key is not an unencrypted PEM private key"]


def test_replication_clauses_verify_the_primary() -> None:
    assert replication_tls_clause("mariadb", "/t/ca.crt") == (
        "MASTER_SSL = 1, MASTER_SSL_CA = '/t/ca.crt', MASTER_SSL_VERIFY_SERVER_CERT = 1")
    assert replication_tls_clause("mysql", "/t/ca.crt") == (
        "SOURCE_SSL = 1, SOURCE_SSL_CA = '/t/ca.crt', SOURCE_SSL_VERIFY_SERVER_CERT = 1")
    with pytest.raises(ValueError, match="flavor"):
        replication_tls_clause("postgres", "/t/ca.crt")
    with pytest.raises(ValueError, match="quotes"):
        replication_tls_clause("mysql", "/t/'x")
    assert pymysql_ssl("/t/ca.crt")["ssl_verify_identity"] is True


def test_an_empty_key_is_named_apart_from_a_missing_one(material: dict[str, Pair]) -> None:
    data = {**secret(material), "tls.key": ""}
    del data["ca.crt"]
    assert tls_secret_problems("ns/tls", data) == [
        "Secret ns/tls: key tls.key is empty", "Secret ns/tls: missing key ca.crt"]


def test_the_api_s_base64_is_decoded_and_bad_base64_named(material: dict[str, Pair]) -> None:
    encoded = {key: base64.b64encode(value.encode()).decode()
               for key, value in secret(material).items()}
    assert secret_data_problems("ns/tls", encoded) == []
    assert secret_data_problems("ns/tls", {**encoded, "ca.crt": "not base64!"}) == [
        "Secret ns/tls: key ca.crt is not base64"]
    assert secret_data_problems("ns/tls", None) == [
        f"Secret ns/tls: missing key {key}" for key in ("tls.crt", "tls.key", "ca.crt")]
