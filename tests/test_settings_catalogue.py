"""The settings catalogue: the README's configuration table against the code.

Every variable ``Settings.from_env`` reads is a row of the table, and every row names a
variable something reads; a row's flag is a ``flux serve --help`` option that names the
variable, and an option that names one is in that variable's row; a plain default in
the table is the settings' default. An operator reading the table, or ``--help``, is
told every setting there is, once and the same way.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys

from hub.config import _ENV, Settings

from .doc_blocks import ROOT

#: Variables read outside ``Settings.from_env`` (hub/cli.py, hub/config.py).
ELSEWHERE = {"FLUX_WORKERS", "FLUX_OAUTH_<NAME>_CLIENT_ID", "FLUX_OAUTH_<NAME>_CLIENT_SECRET"}

_ROW = re.compile(r"^\| (?P<names>`[^|]+) \| (?P<flag>[^|]+) \| (?P<default>[^|]+) \|")


def _rows() -> dict[str, tuple[str, str]]:
    """The configuration table: variable -> (flag, default), as written."""
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    section = text.split("\n## Configuration\n", 1)[1].split("\n## ", 1)[0]
    rows: dict[str, tuple[str, str]] = {}
    for line in section.splitlines():
        match = _ROW.match(line)
        if match is None:
            continue
        names = re.findall(r"`([A-Z_<>]+)`", match["names"])
        # "`FLUX_OAUTH_<NAME>_CLIENT_ID`, `_CLIENT_SECRET`": the second is a suffix.
        stem = names[0].rsplit("_CLIENT_ID", 1)[0]
        for name in names:
            full = stem + name if name.startswith("_") else name
            assert full not in rows, f"{full} is twice in the table"
            rows[full] = (match["flag"].strip(), match["default"].strip())
    return rows


def _serve_options() -> dict[str, str]:
    """``flux serve --help``: option -> the variable its help names (``env X``)."""
    done = subprocess.run(
        [sys.executable, "-m", "hub.cli", "serve", "--help"],
        capture_output=True,
        text=True,
        check=True,
        env={**os.environ, "COLUMNS": "1000"},
    )
    # An option whose metavar is long has its help on the next line: join them.
    joined = re.sub(r"\n {20,}", " ", done.stdout)
    return dict(re.findall(r"^\s+(--[a-z-]+)\b.*?\(env ([A-Z_]+)", joined, re.M))


def test_every_variable_the_hub_reads_is_in_the_table_and_no_other() -> None:
    assert set(_rows()) == set(_ENV) | ELSEWHERE


def test_the_table_s_flags_are_the_serve_options_that_name_each_variable() -> None:
    rows = _rows()
    options = _serve_options()
    assert options, "flux serve --help names no variable"
    for option, variable in options.items():
        assert rows[variable][0] == f"`{option}`", (variable, rows[variable][0])
    flagged = {v: flag for v, (flag, _) in rows.items() if flag != "—"}
    assert flagged == {v: f"`{o}`" for o, v in options.items()}


def test_the_table_s_plain_defaults_are_the_settings_defaults() -> None:
    defaults = Settings()
    checked = 0
    for variable, (_, written) in _rows().items():
        plain = re.fullmatch(r"`([^`]+)`", written)
        if variable not in _ENV or plain is None:
            continue  # no default, or words around it: read by eye
        group, field, _ = _ENV[variable]
        value = getattr(getattr(defaults, group) if group else defaults, field)
        shown = plain[1]
        expected = str(value).lower() if isinstance(value, bool) else str(value)
        if isinstance(value, float) and value.is_integer():
            expected = str(int(value))
        assert shown.removeprefix("./") == expected, (variable, shown, value)
        checked += 1
    assert checked >= 60, checked
