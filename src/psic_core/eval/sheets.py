"""Side-by-side and contact-sheet images for people to look at."""

from __future__ import annotations

from PIL import Image, ImageDraw

LABEL_HEIGHT = 22
LINE_HEIGHT = 13
GAP = 8


def side_by_side(panels: list[tuple[str, Image.Image]], background=(255, 255, 255)) -> Image.Image:
    """Panels in one row, each with its label underneath."""
    width = sum(im.width for _, im in panels) + GAP * (len(panels) - 1)
    height = max(im.height for _, im in panels) + LABEL_HEIGHT
    sheet = Image.new("RGB", (width, height), background)
    draw = ImageDraw.Draw(sheet)
    x = 0
    for label, im in panels:
        sheet.paste(im.convert("RGB"), (x, 0))
        draw.text((x + 4, im.height + 5), label, fill=(0, 0, 0))
        x += im.width + GAP
    return sheet


def _fit(im: Image.Image, panel: int) -> Image.Image:
    im = im.convert("RGB")
    scale = min(panel / im.width, panel / im.height, 1.0)
    if scale < 1.0:
        im = im.resize((max(1, round(im.width * scale)), max(1, round(im.height * scale))), Image.LANCZOS)
    return im


def contact_sheet(rows: list[list[tuple[str, Image.Image]]], panel: int = 256, title: str | None = None,
                  background=(255, 255, 255)) -> Image.Image:
    """A grid: one row per entry of ``rows``, each panel scaled to fit ``panel`` x ``panel`` (never enlarged) with its
    label (may hold several lines) underneath; an optional title on top."""
    if not rows:
        raise ValueError("no rows")
    columns = max(len(r) for r in rows)
    lines = max(label.count("\n") + 1 for r in rows for label, _ in r)
    label_height = 6 + LINE_HEIGHT * lines
    fitted = [[(label, _fit(im, panel)) for label, im in r] for r in rows]
    row_heights = [max(im.height for _, im in r) + label_height for r in fitted]
    title_height = LABEL_HEIGHT if title else 0
    width = columns * panel + (columns - 1) * GAP
    sheet = Image.new("RGB", (width, title_height + sum(row_heights) + GAP * (len(rows) - 1)), background)
    draw = ImageDraw.Draw(sheet)
    if title:
        draw.text((4, 5), title, fill=(0, 0, 0))
    y = title_height
    for r, height in zip(fitted, row_heights):
        for column, (label, im) in enumerate(r):
            x = column * (panel + GAP)
            sheet.paste(im, (x + (panel - im.width) // 2, y))
            draw.multiline_text((x + 4, y + height - label_height + 4), label, fill=(0, 0, 0), spacing=2)
        y += height + GAP
    return sheet
