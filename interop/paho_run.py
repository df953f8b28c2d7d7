#!/usr/bin/env python3
"""Run one test of the vendored Eclipse Paho interoperability suite
(third_party/paho.mqtt.testing) against one broker, as that suite's own
`__main__` block would, with EdgeID credentials added to every CONNECT.

    paho_run.py --suite client_test  --port 1883 [--credentials FILE] TEST
    paho_run.py --suite client_test5 --list

The vendored files are not edited. This adapter:

  * gives the suite's client library (mqtt.clients.V311/V5) a username and a
    password (an access token) for each client id, from the credentials file
    written by interop/provision: {client id: {client_id, username, password}};
  * makes Client.subscribe wait (up to 3 s) for its own SUBACK when the
    client has a callback: the tests mean to wait for SUBACKs before they
    publish, but several wait on the wrong client's (a race, lost at random);
  * sends "clean_retained" where the suite's cleanup helper uses the client id
    "clean retained" (an EdgeID device id may not hold whitespace); the same
    for both brokers, so the baseline sees the same traffic;
  * leaves out mqtt.brokers (the suite's Python broker, which mqtt/__init__.py
    imports but neither test file uses) with an empty stand-in module, so that
    only the client and packet-format code needs vendoring;
  * sets the module globals (host, port, topics, ...) that each file's
    `__main__` block sets, and runs the one test with unittest.

Exit status: 0 when the test passed, 1 when it failed or errored.
"""

import argparse
import json
import logging
import os
import sys
import time
import types
import unittest

HERE = os.path.dirname(os.path.abspath(__file__))
SUITE_DIR = os.path.join(HERE, "..", "third_party", "paho.mqtt.testing", "interoperability")


def load_suite(name):
    sys.dont_write_bytecode = True  # no __pycache__ in third_party/
    sys.path.insert(0, os.path.abspath(SUITE_DIR))
    # mqtt/__init__.py does `from . import formats, brokers, clients`; the
    # broker package is not vendored.
    sys.modules.setdefault("mqtt.brokers", types.ModuleType("mqtt.brokers"))
    return __import__(name)


def adapt_client(creds):
    from mqtt.clients.V311 import main as v311
    from mqtt.clients.V5 import main as v5

    for cls in (v311.Client, v5.Client):
        orig_init, orig_connect = cls.__init__, cls.connect

        def __init__(self, clientid, _orig=orig_init):
            cid = clientid.decode("utf-8") if isinstance(clientid, bytes) else clientid
            c = creds.get(cid)
            if c is not None and c["client_id"] != cid:
                clientid = c["client_id"].encode("utf-8") if isinstance(clientid, bytes) else c["client_id"]
            self._interop_cred = c
            _orig(self, clientid)

        def connect(self, *args, _orig=orig_connect, **kwargs):
            c = getattr(self, "_interop_cred", None)
            if c is not None and kwargs.get("username") is None and kwargs.get("password") is None and len(args) < 12:
                kwargs["username"] = c["username"]
                kwargs["password"] = c["password"].encode("utf-8")
            return _orig(self, *args, **kwargs)

        def subscribe(self, *args, _orig=cls.subscribe, **kwargs):
            # Wait (up to 3 s) for this SUBSCRIBE's SUBACK, as the tests mean
            # to: several send a second client's SUBSCRIBE and then wait on
            # the first client's SUBACKs (callback instead of callback2)
            # before publishing, a race the broker that adds a few
            # microseconds to SUBSCRIBE loses at random.
            msgid = _orig(self, *args, **kwargs)
            acks = getattr(self.callback, "subscribeds", None)
            if acks is not None:
                deadline = time.monotonic() + 3
                while time.monotonic() < deadline and not any(a[0] == msgid for a in list(acks)):
                    time.sleep(0.005)
            return msgid

        cls.__init__, cls.connect, cls.subscribe = __init__, connect, subscribe


def set_globals(mod, suite, host, port):
    # What each file's `if __name__ == "__main__":` block sets.
    mod.host, mod.port = host, port
    mod.nosubscribe_topics = ("test/nosubscribe",)
    base_topics = ["TopicA", "TopicA/B", "Topic/C", "TopicA/C", "/TopicA"]
    base_wild = ["TopicA/+", "+/C", "#", "/#", "/+", "+/+", "TopicA/#"]
    if suite == "client_test5":
        mod.topic_prefix = "client_test5/"
        # (Test.setUpClass calls setData(), which sets them back unprefixed.)
        mod.topics = [mod.topic_prefix + t for t in base_topics]
        mod.wildtopics = [mod.topic_prefix + t for t in base_wild]
    else:
        mod.topics = tuple(base_topics)
        mod.wildtopics = tuple(base_wild)
    logging.getLogger().setLevel(logging.ERROR)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--suite", required=True, choices=["client_test", "client_test5"])
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, default=1883)
    ap.add_argument("--credentials", help="credentials.json from interop/provision")
    ap.add_argument("--list", action="store_true", help="print the suite's test names and exit")
    ap.add_argument("test", nargs="?")
    a = ap.parse_args()

    mod = load_suite(a.suite)
    loader = unittest.TestLoader()
    if a.list:
        for name in loader.getTestCaseNames(mod.Test):
            print(name)
        return 0
    if not a.test:
        ap.error("name a test (or --list)")
    creds = {}
    if a.credentials:
        with open(a.credentials) as f:
            creds = json.load(f)
    adapt_client(creds)
    set_globals(mod, a.suite, a.host, a.port)
    tests = loader.loadTestsFromName("Test." + a.test, mod)
    result = unittest.TextTestRunner(stream=sys.stdout, verbosity=2).run(tests)
    sys.stdout.flush()
    # The suite's receiver threads may still be blocked on a socket.
    os._exit(0 if result.wasSuccessful() and result.testsRun == 1 else 1)


if __name__ == "__main__":
    sys.exit(main())
