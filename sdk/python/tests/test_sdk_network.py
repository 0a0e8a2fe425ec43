"""Networks and preview links in the Python SDK, against a real daemon: an agent serves a web
app from its sandbox and a person opens it through a link."""

from __future__ import annotations

import os
import sys
import time
import unittest
import urllib.error
import urllib.request
from http.cookiejar import CookieJar

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from test_sdk import SdkTestCase  # noqa: E402  (also puts the SDK on sys.path)

from pitbox import InvalidArgument  # noqa: E402


class NetworkTest(SdkTestCase):
    def test_policy_ports_and_preview_links(self) -> None:
        box = self.box(image="host", network={"policy": "egress", "deny_cidrs": ["10.0.0.0/8"]})
        self.assertEqual(box.network["deny_cidrs"], ["10.0.0.0/8"])
        self.assertTrue(box.network["address"])
        self.assertEqual(box.set_network("none").network["policy"], "none")
        with self.assertRaises(InvalidArgument) as bad:
            box.set_network(allow_cidrs=["127.0.0.1"])
        self.assertIn("network.allow_cidrs[0]", str(bad.exception))

        box.exec("mkdir -p /srv && echo 'an app' > /srv/index.html && cd /srv && "
                 "(nohup python3 -m http.server 8000 >/dev/null 2>&1 &)")
        for _ in range(200):
            if 8000 in box.ports():
                break
            time.sleep(0.05)
        self.assertEqual(box.ports(), [8000])

        # A browser-like client: it keeps the cookie the link sets and follows the redirect.
        url = box.preview_url(8000, expires_in=600)
        self.assertIn("8000-%s.localhost" % box.id, url)
        path_url = box.preview_url(8000, by_path=True)
        opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(CookieJar()))
        with opener.open(path_url, timeout=30) as r:
            self.assertEqual(r.read(), b"an app\n")
        box.revoke_previews()
        opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(CookieJar()))
        with self.assertRaises(urllib.error.HTTPError) as denied:
            opener.open(path_url, timeout=30)
        self.assertEqual(denied.exception.code, 403)

        # A public port: no link, no key; private again.
        public = box.set_port_public(8000, by_path=True)
        with urllib.request.urlopen(public, timeout=30) as r:
            self.assertEqual(r.read(), b"an app\n")
        box.set_port_public(8000, False)
        with self.assertRaises(urllib.error.HTTPError) as denied:
            urllib.request.urlopen(public, timeout=30)
        self.assertEqual(denied.exception.code, 401)


if __name__ == "__main__":
    unittest.main()
