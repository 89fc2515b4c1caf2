#!/usr/bin/env python3
"""Checks of the generated API reference, used by scripts/docs.sh --check.

    docs_check.py links SITE_DIR              every link inside the site reaches a file (and
                                              its #anchor, when the target is a page of the site)
    docs_check.py page PNG DOM WORD...        a page as a reader saw it: the screenshot is not
                                              blank, and the rendered text has every WORD

Exit status 0 when the check passes, 1 when it fails (with the reasons on stderr).
Needs Pillow (Debian: python3-pil) for the screenshot check only.
"""
import html
import html.parser
import os
import re
import sys
import urllib.parse


class _Links(html.parser.HTMLParser):
    """Collects the link targets (href, src) and the anchors (id, name) of one page."""

    def __init__(self):
        super().__init__(convert_charrefs=True)
        self.targets = []
        self.anchors = set()

    def handle_starttag(self, tag, attrs):
        for name, value in attrs:
            if value is None:
                continue
            if name in ("href", "src"):
                self.targets.append(value)
            elif name == "id" or (tag == "a" and name == "name"):
                self.anchors.add(value)


def _is_external(url):
    # http:, https:, mailto:, javascript:, data: ... are not files of the site.
    return bool(urllib.parse.urlsplit(url).scheme)


def check_links(site):
    site = os.path.abspath(site)
    pages = {}
    css_refs = []
    for root, _dirs, files in os.walk(site):
        for name in files:
            path = os.path.join(root, name)
            if name.endswith(".html"):
                parser = _Links()
                with open(path, encoding="utf-8", errors="replace") as f:
                    parser.feed(f.read())
                pages[path] = parser
            elif name.endswith(".css"):
                with open(path, encoding="utf-8", errors="replace") as f:
                    for url in re.findall(r"url\(\s*['\"]?([^'\")]+)['\"]?\s*\)", f.read()):
                        css_refs.append((path, url))
    if not pages:
        print(f"docs-check: no HTML page under {site}", file=sys.stderr)
        return 1

    broken = []
    checked = 0

    def check(source, url):
        nonlocal checked
        if _is_external(url) or not url.strip():
            return
        checked += 1
        parts = urllib.parse.urlsplit(url)
        target = source
        if parts.path:
            target = os.path.normpath(
                os.path.join(os.path.dirname(source), urllib.parse.unquote(parts.path)))
        where = os.path.relpath(source, site)
        if not os.path.exists(target):
            broken.append(f"{where}: {url} -> missing file {os.path.relpath(target, site)}")
            return
        if parts.fragment:
            anchors = pages[target].anchors if target in pages else None
            if anchors is not None and urllib.parse.unquote(parts.fragment) not in anchors:
                broken.append(f"{where}: {url} -> no anchor #{parts.fragment}")

    for path, parser in pages.items():
        for url in parser.targets:
            check(path, url)
    for path, url in css_refs:
        check(path, url)

    for line in broken:
        print(f"docs-check: broken link: {line}", file=sys.stderr)
    print(f"docs-check: {len(pages)} pages, {checked} internal links, {len(broken)} broken")
    return 1 if broken else 0


def _page_text(dom_path):
    with open(dom_path, encoding="utf-8", errors="replace") as f:
        dom = f.read()
    dom = re.sub(r"<(script|style)\b.*?</\1>", " ", dom, flags=re.S | re.I)
    return html.unescape(re.sub(r"<[^>]+>", " ", dom))


def check_page(png_path, dom_path, words):
    try:
        from PIL import Image
    except ImportError:
        print("docs-check: Pillow is missing (Debian: python3-pil)", file=sys.stderr)
        return 1
    failures = []
    with Image.open(png_path) as image:
        rgb = image.convert("RGB")
        width, height = rgb.size
        colours = rgb.getcolors(maxcolors=width * height)
    colours.sort(reverse=True)
    background = colours[0][0] / (width * height)
    if len(colours) < 2:
        failures.append(f"{png_path} is a single colour {colours[0][1]}: a blank page")
    elif background > 0.995:
        failures.append(f"{png_path} is {background:.1%} one colour: an almost blank page")
    text = _page_text(dom_path)
    missing = [w for w in words if w.lower() not in text.lower()]
    if missing:
        failures.append(f"the rendered text of {dom_path} lacks {', '.join(map(repr, missing))}")
    for line in failures:
        print(f"docs-check: {line}", file=sys.stderr)
    if failures:
        return 1
    print(f"docs-check: {os.path.basename(png_path)} {width}x{height}, {len(colours)} colours "
          f"({1 - background:.1%} of the pixels not background); text has "
          f"{', '.join(map(repr, words))}")
    return 0


def main(argv):
    if len(argv) == 2 and argv[0] == "links":
        return check_links(argv[1])
    if len(argv) >= 4 and argv[0] == "page":
        return check_page(argv[1], argv[2], argv[3:])
    print(__doc__, file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
