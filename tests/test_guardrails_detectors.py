"""The built-in detectors on the cases their docstrings promise, and on adversarial input: every
scan of 100 KB stays linear (bounded repetitions), whatever the text is made of."""
from __future__ import annotations

import base64
import json
import time

import pytest
from pydantic import ValidationError

from hookgate.plugins.guardrails_detectors import (
    CredentialsDetector,
    EmailDetector,
    IbanDetector,
    IpAddressDetector,
    NationalIdDetector,
    PaymentCardDetector,
    PhoneDetector,
    PhoneOptions,
)


def found(detector, text: str) -> list[tuple[str, str]]:
    return [(f.kind, text[f.start : f.end]) for f in sorted(detector.detect(text), key=lambda f: f.start)]


def test_email_internationalised_and_at_sentence_end():
    assert found(EmailDetector(), "Schreib an jürgen.müller@beispiel.de. Или почта@пример.рф!") == [
        ("EMAIL", "jürgen.müller@beispiel.de"),
        ("EMAIL", "почта@пример.рф"),
    ]


def test_phone_national_formats_need_their_region_and_international_ones_do_not():
    text = "Ruf 030 23125000 an, or +1 415-555-2671"
    assert found(PhoneDetector(), text) == [("PHONE", "+1 415-555-2671")]
    assert found(PhoneDetector(PhoneOptions(regions=("de", "US"))), text) == [("PHONE", "030 23125000"), ("PHONE", "+1 415-555-2671")]


def test_a_number_after_an_identifier_label_is_a_record_not_a_phone():
    text = "Order 2125551234 shipped; call customer service at +1 415-555-2671 or customer no. 4155552671"
    assert found(PhoneDetector(), text) == [("PHONE", "+1 415-555-2671")]


def test_phone_options_are_checked():
    with pytest.raises(ValidationError, match="unknown regions: XX"):
        PhoneOptions(regions=("US", "XX"))
    with pytest.raises(ValidationError):
        PhoneOptions(regions=())


def test_card_numbers_grouped_or_not_with_punctuation_after():
    text = "Paid with 4111-1111-1111-1111. Also 378282246310005, and 5555 5555 5555 4444!"
    assert [value for _, value in found(PaymentCardDetector(), text)] == ["4111-1111-1111-1111", "378282246310005", "5555 5555 5555 4444"]


def test_card_look_alikes_are_not_cards():
    detector = PaymentCardDetector()
    assert found(detector, "order #4111111111111111") == []
    assert found(detector, "4111111111111112 fails Luhn, 41111111111111111111 runs on, 1111 1111 1111 1117 has no issuer") == []
    assert found(detector, "amount 4111111111111111.50 and 0000 0000 0000 0000") == []


def test_iban_grouped_followed_by_a_word():
    text = "IBAN GB82 WEST 1234 5698 7654 32 EUR please, or de89370400440532013000."
    assert found(IbanDetector(), text) == [("IBAN", "GB82 WEST 1234 5698 7654 32"), ("IBAN", "de89370400440532013000")]
    assert found(IbanDetector(), "GB82 WEST 1234 5698 7654 33") == []  # one digit off: the checksum fails


def test_ip_addresses_and_what_is_not_one():
    text = "from 10.0.0.1:8080 and [2001:db8::8a2e:370:7334]:443; fe80::1%eth0. Not 127.0.0.1, ::1, v1.2.3.4, 12:30:45."
    assert [value for _, value in found(IpAddressDetector(), text)] == ["10.0.0.1", "2001:db8::8a2e:370:7334", "fe80::1%eth0"]


def test_national_ids_are_checked_by_their_rules():
    detector = NationalIdDetector()
    text = "SSN 536-22-8726, NINO AB 12 34 56 C, DNI 12345678Z, NIE X1234567L, CF RSSMRA85T10A562S, NIR 1 84 12 76 451 089 46."
    assert [kind for kind, _ in found(detector, text)] == ["US_SSN", "UK_NINO", "ES_NIF", "ES_NIF", "IT_FISCAL_CODE", "FR_NIR"]
    invalid = "666-22-8726 900-22-8726 078-05-1120 ZZ 12 34 56 C QQ123456C 12345678A X1234567A RSSMRA85T10A562T"
    assert found(detector, invalid) == []
    assert NationalIdDetector(NationalIdDetector.Config(kinds=("UK_NINO",))).kinds == {"UK_NINO"}


def jwt(header: dict) -> str:
    segment = lambda obj: base64.urlsafe_b64encode(json.dumps(obj).encode()).decode().rstrip("=")  # noqa: E731
    return f"{segment(header)}.{segment({'sub': '1234567890', 'name': 'Jane'})}.{'s' * 43}"


def test_credentials_by_kind():
    key = "-----BEGIN OPENSSH PRIVATE KEY-----\nb3BlbnNzaC1rZXktdjEAAAAABG5vbmUAAAAEbm9uZQ\n-----END OPENSSH PRIVATE KEY-----"
    text = f"{key}\ntoken {jwt({'alg': 'HS256', 'typ': 'JWT'})} db postgres://app:s3cr%40t@db:5432/x and aws_secret_access_key = {'wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY'}"
    assert [kind for kind, _ in found(CredentialsDetector(), text)] == ["PRIVATE_KEY", "JWT", "PASSWORD", "API_KEY"]
    assert ("PASSWORD", "s3cr%40t") in found(CredentialsDetector(), text)


def test_a_private_key_cut_off_is_masked_to_the_end_of_its_base64():
    text = "-----BEGIN RSA PRIVATE KEY-----\nMIIEowIBAAKCAQEAx4nqVvbU0ZPvd\nMIIEowIBAAKCAQEAx4nqVvbU0ZPvd\n\nThanks, Bob"
    [(kind, value)] = found(CredentialsDetector(), text)
    assert kind == "PRIVATE_KEY" and value.endswith("ZPvd") and "Thanks" not in value


def test_credential_look_alikes_are_not_credentials():
    text = (
        "sk-learn, sk-your-key-here, sk-" + "x" * 48 + ", " + jwt({"typ": "JWT"}) + ", postgres://u:${PW}@db, "
        "mysql://root:****@db, -----BEGIN PUBLIC KEY-----\nMFkwEwYHKoZIzj0CAQYIKoZIzj0DAQcDQgAE\n-----END PUBLIC KEY-----"
    )
    assert found(CredentialsDetector(), text) == []


ADVERSARIAL = {
    "digits": "1" * 100_000,
    "digit groups": "1234 " * 20_000,
    "dotted digits": "1." * 50_000,
    "base64": base64.b64encode(bytes(range(256)) * 293).decode()[:100_000],
    "at signs": "a@" * 50_000,
    "e-mail local parts": "a.b" * 33_000 + "@",
    "colons": "ab:" * 33_000,
    "iban-like": "AB12" * 25_000,
    "key prefixes": "sk-" * 33_000,
    "jwt prefixes": "eyJ." * 25_000,
    "url schemes": "a://" * 25_000,
    "pem headers": "-----BEGIN PRIVATE KEY-----\n" * 3_700,
}


@pytest.mark.parametrize("name", ADVERSARIAL)
def test_100_kb_of_adversarial_text_scans_in_linear_time(name):
    text = ADVERSARIAL[name]
    detectors = [EmailDetector(), PhoneDetector(), PaymentCardDetector(), IbanDetector(), IpAddressDetector(), NationalIdDetector(), CredentialsDetector()]
    for detector in detectors:
        started = time.process_time()  # CPU time: other work on a shared machine does not count
        detector.detect(text)
        # A quadratic pattern would take minutes here; the slowest linear one (libphonenumber on
        # 20,000 digit groups) takes about 1.5 s of CPU on this 2-core machine.
        assert time.process_time() - started < 5.0, detector.name
