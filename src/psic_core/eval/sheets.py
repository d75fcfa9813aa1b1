"""Side-by-side and contact-sheet images for people to look at."""

from __future__ import annotations

from PIL import Image, ImageDraw

LABEL_HEIGHT = 22
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
