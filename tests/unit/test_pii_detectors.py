"""The built-in detectors and custom recognizers, one behaviour per test (the labelled corpus,
tests/pii/corpus.jsonl, measures them as a whole: test_pii_corpus.py)."""

from __future__ import annotations

import pytest

from tiller.common.pii import checks
from tiller.common.pii.recognizers import RecognizerSpec
from tiller.common.pii.scanner import Scanner

SCANNER = Scanner()


def found(text: str, scanner: Scanner = SCANNER) -> list[tuple[str, str]]:
    return [(f.type, text[f.start : f.end]) for f in scanner.find(text)]


@pytest.mark.parametrize(
    "number",
    [
        "010-1234-5678",
        "010 1234 5678",
        "01012345678",
        "010.1234.5678",
        "(010)1234-5678",
        "+82 10-1234-5678",
        "+821012345678",
        "(02) 1234-5678",
        "02-123-4567",
        "031-123-4567",
        "070-1234-5678",
        "+1 650-253-0000",
        "+44 20 7946 0958",
        "+81 3-1234-5678",
    ],
)
def test_phone_numbers_in_the_forms_people_type(number: str) -> None:
    assert found(f"연락처: {number}로 전화 주세요") == [("PHONE", number)]


@pytest.mark.parametrize(
    "text",
    ["2024-01-15", "20240115", "주문번호 202401-1234-567890", "계좌 110-123-456789", "12:30:45"],
)
def test_dates_orders_and_accounts_are_not_phone_numbers(text: str) -> None:
    assert found(text) == []


def test_resident_numbers_need_a_real_birth_date() -> None:
    assert found("주민번호 991332-1234567") == []  # month 13
    assert found("주민번호 990230-1234567") == []  # 30 February
    assert [t for t, _ in found("주민번호 900101-1234567")] == ["KR_RRN"]


def test_a_check_digit_makes_a_bare_number_a_registration_number() -> None:
    valid = _with_check_digit("900101123456", foreigner=False)
    assert checks.registration_checksum(valid)
    assert found(f"no {valid} here") == [("KR_RRN", valid)]
    wrong = valid[:-1] + str((int(valid[-1]) + 1) % 10)
    # Without a check digit (numbers since October 2020 have none) a bare run of 13 digits is
    # an order number, unless a context word says otherwise; written with its dash it counts.
    assert found(f"order {wrong} shipped") == []
    assert found(f"주민등록번호 {wrong}") == [("KR_RRN", wrong)]
    assert found(f"주문 {wrong[:6]}-{wrong[6:]}") == [("KR_RRN", f"{wrong[:6]}-{wrong[6:]}")]


def test_foreigner_numbers_have_their_own_type() -> None:
    number = _with_check_digit("850315512345", foreigner=True)
    assert found(f"외국인등록번호 {number[:6]}-{number[6:]}") == [
        ("KR_FRN", f"{number[:6]}-{number[6:]}")
    ]


def test_cards_pass_luhn_and_belong_to_an_issuer() -> None:
    assert found("visa 4111 1111 1111 1111.") == [("CARD", "4111 1111 1111 1111")]
    assert found("amex 3782-822463-10005") == [("CARD", "3782-822463-10005")]
    assert found("bad 4111 1111 1111 1112") == []  # Luhn fails
    assert found("id 0000000000000000") == []  # passes Luhn, no issuer starts with 0


def test_emails_end_where_korean_text_begins() -> None:
    assert found("메일은 kim.min-su+tiller@mail.example.co.kr으로 보내주세요.") == [
        ("EMAIL", "kim.min-su+tiller@mail.example.co.kr")
    ]
    assert found("@app.route('/x') and a@b") == []


def test_ip_addresses_but_not_versions() -> None:
    assert found("from 10.0.0.1:8080 and [2001:db8::1]:443") == [
        ("IP", "10.0.0.1"),
        ("IP", "2001:db8::1"),
    ]
    assert found("version 4.3.2.1, v1.2.3.4, 1.2.3.4.5, 256.1.1.1, 00:1A:2B:3C:4D:5E") == []


def test_custom_recognizers_with_a_validator_and_context_words() -> None:
    scanner = Scanner(
        [
            RecognizerSpec(type="EMPLOYEE_ID", pattern=r"E\d{6}", context=("사번",), score=0.3),
            RecognizerSpec(type="IBAN", pattern=r"[A-Z]{2}\d{2}[A-Z0-9]{11,30}", validator="iban"),
        ]
    )
    assert found("사번 E123456 입니다", scanner) == [("EMPLOYEE_ID", "E123456")]
    assert found("ticket E123456", scanner) == []  # below the threshold without context
    assert found("pay GB82WEST12345698765432 now", scanner) == [("IBAN", "GB82WEST12345698765432")]
    assert found("pay GB82WEST12345698765433 now", scanner) == []  # mod-97 fails


def test_only_the_types_asked_for() -> None:
    text = "kim@example.com 010-1234-5678"
    assert [f.type for f in SCANNER.find(text, ["PHONE"])] == ["PHONE"]


def _with_check_digit(first12: str, foreigner: bool) -> str:
    total = sum(
        int(d) * w for d, w in zip(first12, (2, 3, 4, 5, 6, 7, 8, 9, 2, 3, 4, 5), strict=True)
    )
    return first12 + str(((13 if foreigner else 11) - total % 11) % 10)


@pytest.mark.parametrize(
    ("text", "card"),
    [
        ("4111 1111 1111 1111 12/26", "4111 1111 1111 1111"),
        ("4111111111111111 123", "4111111111111111"),
        ("5500 0000 0000 0004 05/27", "5500 0000 0000 0004"),
        ("4111 1111 1111 1111 123", "4111 1111 1111 1111"),
    ],
)
def test_a_card_followed_by_its_expiry_or_code(text: str, card: str) -> None:
    assert found(text) == [("CARD", card)]


def test_two_cards_in_a_row_but_not_a_longer_grouped_number() -> None:
    assert [v for _, v in found("card 4111111111111111 5500000000000004")] == [
        "4111111111111111",
        "5500000000000004",
    ]
    assert found("Reference 4111 1111 1111 1111 1111") == []


@pytest.mark.parametrize(
    ("text", "number"),
    [
        ("+82 10-1234-5678 3시 이후 연락", "+82 10-1234-5678"),
        ("Call +1 650-253-0000 9am-5pm", "+1 650-253-0000"),
        ("전화 010 1234 5678 3시", "010 1234 5678"),
        ("(010) 1234-5678 2번", "(010) 1234-5678"),
        ("(+82) 10-1234-5678", "(+82) 10-1234-5678"),
        ("+33 1 42 68 53 00", "+33 1 42 68 53 00"),
    ],
)
def test_a_phone_number_followed_by_other_numbers(text: str, number: str) -> None:
    assert found(text) == [("PHONE", number)]


def test_a_list_of_numbers_is_read_one_by_one() -> None:
    numbers = ["010-1234-5678", "02-123-4567", "010-9876-5432", "031-123-4567"]
    assert [v for _, v in found(" ".join(numbers))] == numbers


@pytest.mark.parametrize(
    ("text", "type_"),
    [
        ("\uff10\uff11\uff10-\uff11\uff12\uff13\uff14-\uff15\uff16\uff17\uff18", "PHONE"),
        ("\u0660\u0661\u0660\u0661\u0662\u0663\u0664\u0665\u0666\u0667\u0668", "PHONE"),
        ("\uff11\uff19\uff12.\uff11\uff16\uff18.\uff10.\uff11", "IP"),
        ("kim\uff20example.com", "EMAIL"),
    ],
)
def test_digits_of_other_scripts_and_fullwidth_forms(text: str, type_: str) -> None:
    assert found(text) == [(type_, text)]


def test_overlapping_findings_are_masked_whole_and_block_sees_both() -> None:
    scanner = Scanner([RecognizerSpec(type="EMPLOYEE_ID", pattern=r"\d{6}", context=("사번",))])
    text = "사번 123456, 메일 hong123456@corp.co.kr"
    [_, merged] = scanner.find(text)
    assert text[merged.start : merged.end] == "hong123456@corp.co.kr"  # no part left out
    assert merged.type == "EMPLOYEE_ID" and merged.covers == {"EMAIL"}


def test_text_built_to_be_slow_stays_cheap() -> None:
    """A budget bounds the phone search; this checks it stops, not how fast (no timing)."""
    text = "00 " * 40_000
    assert SCANNER.find(text) == []


# --- the classes of false positives and misses an outside audit found (issue 20) -------------
BARE = _with_check_digit("900101123456", foreigner=False)[:-1] + "0"  # no valid check digit
assert not checks.registration_checksum(BARE)


@pytest.mark.parametrize(
    "word", ["parcel", "March", "search", "archive", "Marcus", "주민센터", "입주민", "주민들"]
)
def test_a_context_word_inside_another_word_is_no_context(word: str) -> None:
    assert found(f"{word} {BARE}") == []


@pytest.mark.parametrize("context", ["ARC", "arc:", "(ARC)", "RRN=", "주민번호", "주민 번호:"])
def test_a_context_word_of_its_own_still_counts(context: str) -> None:
    assert [t for t, _ in found(f"{context} {BARE}")] == ["KR_RRN"]


@pytest.mark.parametrize(
    "text",
    [
        "Version: 10.1.1.1",
        "version=1.2.3.4",
        "버전: 1.2.3.4",
        '"version": "2.0.0.1"',
        "<version>1.0.0.3</version>",
        'AssemblyVersion("1.0.0.0")',
        "firmwareVersion=2.1.0.15",
        "버전 정보: 3.1.4.1",
        "numpy==1.2.3.4",
        "Firefox/115.0.2.1",
        "section 4.2.1.3",
        "setup-1.2.3.4.exe",
    ],
)
def test_a_version_word_and_its_separator_make_a_version(text: str) -> None:
    assert found(text) == []


@pytest.mark.parametrize("text", ["server: 10.1.1.1", "host=10.1.1.1", "ssh root@10.1.1.1"])
def test_other_words_and_separators_still_name_an_address(text: str) -> None:
    assert found(text) == [("IP", "10.1.1.1")]


@pytest.mark.parametrize("text", ["A::f()", "dead::beef()", "xs = a[::2]", "items[1::2]"])
def test_code_with_double_colons_is_not_an_address(text: str) -> None:
    assert found(text) == []


def test_loopback_and_link_local_are_addresses() -> None:
    assert found("bind ::1 and fe80::1") == [("IP", "::1"), ("IP", "fe80::1")]


@pytest.mark.parametrize("text", ["icon@2x.png", "hero@1.5x.jpg", "url(btn@2x.svg)"])
def test_a_file_name_with_an_at_sign_is_not_an_email(text: str) -> None:
    assert found(text) == []


def test_a_tld_that_is_also_an_extension_elsewhere_is_still_an_email() -> None:
    assert found("founder@startup.ai") == [("EMAIL", "founder@startup.ai")]


def test_a_checked_value_names_the_placeholder_where_findings_overlap() -> None:
    iban = RecognizerSpec(
        type="IBAN",
        pattern=r"[A-Z]{2}\d{2}(?: ?[A-Z0-9]{4}){3,7}(?: ?[A-Z0-9]{1,3})?",
        validator="iban",
    )
    scanner = Scanner([iban])
    text = "IBAN DE89 3704 0044 0532 0130 00, tel 010-2345-6789"
    assert found(text, scanner) == [
        ("IBAN", "DE89 3704 0044 0532 0130 00"),
        ("PHONE", "010-2345-6789"),
    ]


def test_groups_of_four_inside_a_longer_number_are_not_a_phone() -> None:
    assert found("account 3704 0044 0532 0130 01") == []


@pytest.mark.parametrize(
    ("text", "number"),
    [
        ("연락처((061)648-9515)가", "(061)648-9515"),
        ("[(010)2233-4455]", "(010)2233-4455"),
        ("TEL010-1234-5678", "010-1234-5678"),
        ("HP01012345678", "01012345678"),
        ("Mobile010.3344.5566", "010.3344.5566"),
        ("Call+82-10-2345-6789", "+82-10-2345-6789"),
    ],
)
def test_phones_in_brackets_within_brackets_and_glued_to_labels(text: str, number: str) -> None:
    assert found(text) == [("PHONE", number)]


@pytest.mark.parametrize("text", ["SKU01012345678", "ID0311234567", "x0212345678"])
def test_digits_glued_to_an_identifier_are_not_a_phone(text: str) -> None:
    assert found(text) == []
