"""Every page names an icon the server has, so a browser's console shows no 404."""

from __future__ import annotations

import re

from web_support import client_for


def test_every_page_names_an_icon_that_is_served(gallery_db):
    client = client_for(gallery_db)
    for page in ("/", "/gallery", "/people", "/people/1", "/status", "/docs"):
        html = client.get(page).text
        icons = re.findall(r'<link rel="icon" href="([^"]+)"', html)
        assert icons, page
        for icon in icons:
            answer = client.get(icon)
            assert answer.status_code == 200, (page, icon)
            assert answer.headers["content-type"].startswith("image/"), (page, icon)
