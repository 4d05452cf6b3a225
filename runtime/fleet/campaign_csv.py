"""A campaign's CSV: one row per line after the header, the phone number from one column,
every other non-empty cell a call variable. Errors name the file, the line and the fix."""

from __future__ import annotations

import csv
import hashlib
import io
from collections.abc import Sequence
from pathlib import Path

from runtime.fleet.campaign_store import CampaignDefinition, CampaignError, StoredRow
from runtime.phone_numbers import NotDialable, phone_number

PHONE_COLUMNS = ("phone", "to", "number", "phone_number")


def campaign_id_for(csv_path: str | Path, bot: str) -> str:
    """The id ``dialplan campaign run`` gives this file's campaign with ``bot``."""
    return _campaign_id(hashlib.sha256(_read(Path(csv_path))).hexdigest(), bot)


def read_campaign_csv(
    csv_path: str | Path,
    bot: str,
    phone_column: str | None = None,
    required: Sequence[str] = (),
) -> CampaignDefinition:
    """The campaign a CSV describes: one row per line after the header, the phone number
    from ``phone_column`` (or the first of PHONE_COLUMNS), every other cell a variable.
    A row without a number to dial, or without a ``required`` variable of the bot, is
    invalid (never dialled), with the reason kept."""
    path = Path(csv_path)
    content = _read(path)
    header, lines = _parse(path, content)
    phone = _phone_column(path, header, phone_column)
    digest = hashlib.sha256(content).hexdigest()
    rows = [_row(number, cells, header, phone, required) for number, cells in enumerate(lines, 1)]
    return CampaignDefinition(
        _campaign_id(digest, bot), bot, str(path.resolve()), digest, phone, rows
    )


def _campaign_id(csv_sha256: str, bot: str) -> str:
    return hashlib.sha256(f"{bot}\0{csv_sha256}".encode()).hexdigest()[:16]


def _read(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except FileNotFoundError:
        raise CampaignError(f"{path}: no such file") from None
    except OSError as exc:
        raise CampaignError(f"{path}: cannot read it: {exc.strerror or exc}") from None


def _parse(path: Path, content: bytes) -> tuple[list[str], list[list[str]]]:
    try:
        text = content.decode("utf-8-sig")  # spreadsheets often start UTF-8 with a BOM
    except UnicodeDecodeError as exc:
        line = content[: exc.start].count(b"\n") + 1
        raise CampaignError(
            f'{path}:{line}: not UTF-8 text; save the file as UTF-8 ("CSV UTF-8" in Excel)'
        ) from None
    reader = csv.reader(io.StringIO(text, newline=""))
    try:
        lines = [cells for cells in reader if any(cell.strip() for cell in cells)]
    except csv.Error as exc:
        raise CampaignError(f"{path}:{reader.line_num}: not valid CSV: {exc}") from None
    if not lines:
        raise CampaignError(f"{path}: empty; its first line names the columns, e.g. phone,name")
    header = [name.strip() for name in lines[0]]
    if "" in header:
        raise CampaignError(
            f"{path}: column {header.index('') + 1} of the header has no name "
            "(name it or delete the column)"
        )
    if repeated := sorted({name for name in header if header.count(name) > 1}):
        raise CampaignError(
            f"{path}: the header names {', '.join(repeated)} more than once; "
            "every column needs its own name"
        )
    if len(lines) == 1:
        raise CampaignError(f"{path}: no rows after the header")
    return header, lines[1:]


def _phone_column(path: Path, header: list[str], wanted: str | None) -> str:
    if wanted in header:
        return wanted
    for candidate in [wanted] if wanted else PHONE_COLUMNS:
        found = next((name for name in header if name.lower() == candidate.lower()), None)
        if found is not None:
            return found
    missing = f"no column {wanted!r}" if wanted else f"no {'/'.join(PHONE_COLUMNS)} column"
    raise CampaignError(
        f"{path}: {missing}; its columns are {', '.join(header)} "
        "(name the one with the phone numbers with --phone-column)"
    )


def _row(
    number: int, cells: list[str], header: list[str], phone_column: str, required: Sequence[str]
) -> StoredRow:
    values = {name: cell.strip() for name, cell in zip(header, cells, strict=False)}
    raw = values.pop(phone_column, "")
    variables = {name: value for name, value in values.items() if value}
    missing = [name for name in required if name not in variables]
    reason = ""
    to = raw
    if any(cell.strip() for cell in cells[len(header) :]):
        reason = f"{len(cells)} cells, but the header has {len(header)} columns"
    elif not raw:
        reason = f"no phone number in column {phone_column!r}"
    elif missing:
        reason = (
            f"no value for the bot's required variable(s) {', '.join(missing)} "
            "(fill the column(s) in; the bot needs them for every call)"
        )
    else:
        try:
            to = phone_number(raw)
        except NotDialable as exc:
            reason = str(exc)
    if not reason:
        return StoredRow(number, to, variables)
    return StoredRow(number, raw, variables, "invalid", reason=reason)
