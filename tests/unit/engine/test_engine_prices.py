"""CSV price tables: what parses, and that every rejected file names its problem's place."""

import numpy as np
import pytest

from finq_engine.prices import PriceTableError, parse_price_csv

GOOD = b"date,AAA,BBB\n2024-01-02,100,50\n2024-01-03,101.5,49\n2024-01-04,99,51.25\n"


def test_a_good_file_parses_to_a_dates_by_assets_matrix() -> None:
    table = parse_price_csv(GOOD)
    assert table.assets == ("AAA", "BBB")
    assert table.dates == ("2024-01-02", "2024-01-03", "2024-01-04")
    assert table.prices.shape == (3, 2) and table.prices.dtype == np.float64
    np.testing.assert_array_equal(table.prices[:, 0], [100, 101.5, 99])


def test_bom_crlf_blank_lines_and_spaces_are_tolerated() -> None:
    data = (
        "\ufeffDate , AAA \r\n2024-01-02, 100 \r\n\r\n2024-01-03,101\r\n2024-01-04,102\r\n\r\n"
    ).encode()
    table = parse_price_csv(data)
    assert table.assets == ("AAA",) and table.rows == 3


@pytest.mark.parametrize(
    ("data", "needle"),
    [
        (b"", "empty"),
        (b"date\n2024-01-02\n", "bad header"),
        (b",AAA\n2024-01-02,1\n", "first column"),
        (b"date,AAA,\n2024-01-02,1,2\n", "column 3 has no asset name"),
        (b"date,AAA,AAA\n2024-01-02,1,2\n", "'AAA' appears twice"),
        (
            b"date,AAA\n2024-01-02,100\n2024-01-03,abc\n2024-01-04,1\n",
            "line 3, column 'AAA': 'abc' is not a number",
        ),
        (
            b"date,AAA,BBB\n2024-01-02,100,1\n2024-01-03,1,\n2024-01-04,1,2\n",
            "line 3, column 'BBB': '' is not a number",
        ),
        (
            b"date,AAA\n2024-01-02,100\n2024-01-03,nan\n2024-01-04,1\n",
            "line 3, column 'AAA': 'nan' is not a finite number",
        ),
        (b"date,AAA\n2024-01-02,100\n2024-01-03,101\n", "too few rows: 2"),
        (
            b"date,AAA\n2024-01-03,100\n2024-01-02,101\n2024-01-04,1\n",
            "line 3: 2024-01-02 is out of order",
        ),
        (
            b"date,AAA\n2024-01-02,100\n2024-01-02,101\n2024-01-04,1\n",
            "line 3: 2024-01-02 is a duplicate date",
        ),
        (
            b"date,AAA\n2024-01-02,100\n2024-01-03,0\n2024-01-04,1\n",
            "line 3, column 'AAA': price 0 is not positive",
        ),
        (b"date,AAA\n2024-01-02,100\n2024-01-03,-5\n2024-01-04,1\n", "price -5 is not positive"),
        (b"date,AAA\n02/01/2024,100\n", "line 2, date column: '02/01/2024' is not a date"),
        (b"date,AAA\n2024-01-02,100,7\n", "line 2 has 3 cells; the header has 2"),
        (b"date,AAA\n2024-01-02,\xff\n", "not UTF-8"),
    ],
)
def test_each_bad_file_names_its_problem(data: bytes, needle: str) -> None:
    with pytest.raises(PriceTableError) as info:
        parse_price_csv(data)
    assert needle in str(info.value)


def test_limits_on_assets_and_rows() -> None:
    header = "date," + ",".join(f"A{i}" for i in range(5))
    with pytest.raises(PriceTableError, match="5 asset columns; at most 4"):
        parse_price_csv(f"{header}\n".encode(), max_assets=4)
    rows = "".join(f"2024-01-{d:02d},1\n" for d in range(1, 12))
    with pytest.raises(PriceTableError, match="too many rows: at most 10"):
        parse_price_csv(f"date,A\n{rows}".encode(), max_rows=10)
    assert parse_price_csv(f"date,A\n{rows}".encode(), max_rows=11).rows == 11


@pytest.mark.parametrize(
    ("name", "reason"),
    [
        ('=HYPERLINK("http://x")', "starts with '='"),
        ("+1+1", "starts with '+'"),
        ("-2+3", "starts with '-'"),
        ("@SUM(A1)", "starts with '@'"),
        ("_hidden", "starts with '_'"),
        ("ABC\u202eFED", "bidirectional"),
        ("A\u2066B\u2069", "bidirectional"),
        ("A\x07B", "control"),
        (r"$\frac{1}{2}$", "math markup"),
    ],
)
def test_asset_names_that_a_spreadsheet_chart_or_page_would_misread_are_refused(
    name: str, reason: str
) -> None:
    data = f'date,OK,"{name.replace(chr(34), chr(34) * 2)}"\n'.encode()
    data += b"2024-01-02,1,2\n2024-01-03,1,2\n2024-01-04,1,2\n"
    with pytest.raises(PriceTableError) as info:
        parse_price_csv(data)
    assert f"column 3's name {name!r}" in str(info.value) and reason in str(info.value)


def test_plain_names_with_signs_inside_are_kept() -> None:
    data = b"date,A-B,US$,x_y,C+D\n2024-01-02,1,2,3,4\n2024-01-03,1,2,3,4\n2024-01-04,1,2,3,4\n"
    assert parse_price_csv(data).assets == ("A-B", "US$", "x_y", "C+D")
