#!/usr/bin/python3
"""A DPoP client (RFC 9449) that is not EdgeID's code: Debian's
python3-jwcrypto signs the proofs, python3-requests sends the requests.
edge/http_dpop_test.go runs it against a real gateway.

  dpop_client.py --key K thumbprint
      makes the EC P-256 key K (a JWK file) unless it exists, prints its
      RFC 7638 SHA-256 thumbprint (what the token's cnf.jkt holds).

  dpop_client.py --key K --token T --cacert CA [--method M] [--data D]
                 [--mode MODE] URL
      sends M URL with "Authorization: DPoP T" and a proof it signs itself,
      and prints one JSON object: {"responses": [{"status", "www_authenticate",
      "dpop_nonce", "body"}, ...]}. MODE breaks the request:
        good          a correct proof
        noproof       no DPoP header
        replay        the same proof sent twice (two responses)
        otherurl      a proof for another URL
        othermethod   a proof for another method
        otherkey      a proof signed by another key (not the token's)
        stale         a proof whose iat is 10 minutes old
        bearer        the bound token as "Authorization: Bearer T", no proof
        nonce         as good, and when the answer is 401 use_dpop_nonce with
                      a DPoP-Nonce header, once more with that nonce (two
                      responses)
      --stream asks for text/event-stream and keeps only the first line of
      a 200 answer as its body (the stream is then closed).
"""

import argparse
import base64
import hashlib
import json
import os
import secrets
import sys
import time

from jwcrypto import jwk, jws
import requests


def load_key(path):
    if os.path.exists(path):
        with open(path) as f:
            return jwk.JWK.from_json(f.read())
    key = jwk.JWK.generate(kty="EC", crv="P-256")
    with open(path, "w") as f:
        f.write(key.export_private())
    return key


def b64url(b):
    return base64.urlsafe_b64encode(b).rstrip(b"=").decode()


def proof(key, method, url, token, nonce=None, iat=None):
    claims = {
        "jti": secrets.token_urlsafe(16),
        "htm": method,
        "htu": url,
        "iat": int(time.time()) if iat is None else iat,
        "ath": b64url(hashlib.sha256(token.encode()).digest()),
    }
    if nonce is not None:
        claims["nonce"] = nonce
    header = {"typ": "dpop+jwt", "alg": "ES256", "jwk": key.export_public(as_dict=True)}
    s = jws.JWS(json.dumps(claims).encode())
    s.add_signature(key, None, json.dumps(header))
    return s.serialize(compact=True)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--key", required=True)
    ap.add_argument("--token", default="")
    ap.add_argument("--cacert", default=True)
    ap.add_argument("--method", default="POST")
    ap.add_argument("--data", default=None)
    ap.add_argument("--mode", default="good")
    ap.add_argument("--stream", action="store_true")
    ap.add_argument("url")
    a = ap.parse_args()
    key = load_key(a.key)
    if a.url == "thumbprint":
        print(key.thumbprint())
        return
    # htu is the URL without query and fragment (RFC 9449 §4.2).
    htu = a.url.split("?", 1)[0].split("#", 1)[0]
    method = a.method
    session = requests.Session()

    def send(p, scheme="DPoP"):
        h = {"Authorization": scheme + " " + a.token}
        if p is not None:
            h["DPoP"] = p
        if a.stream:
            h["Accept"] = "text/event-stream"
        r = session.request(method, a.url, headers=h, data=a.data, timeout=30, stream=a.stream,
                            # per request: a session's verify loses to REQUESTS_CA_BUNDLE
                            verify=a.cacert)
        if a.stream:
            first = ""
            if r.status_code == 200:
                first = next(r.iter_lines(decode_unicode=True), "")
            else:
                first = r.text
            r.close()
            r.first_line = first
        return r

    def answer(r):
        return {
            "status": r.status_code,
            "www_authenticate": r.headers.get("WWW-Authenticate", ""),
            "dpop_nonce": r.headers.get("DPoP-Nonce", ""),
            "body": getattr(r, "first_line", None) if a.stream else r.text,
        }

    out = []
    mode = a.mode
    if mode == "good":
        out.append(answer(send(proof(key, method, htu, a.token))))
    elif mode == "noproof":
        out.append(answer(send(None)))
    elif mode == "replay":
        p = proof(key, method, htu, a.token)
        out.append(answer(send(p)))
        out.append(answer(send(p)))
    elif mode == "otherurl":
        out.append(answer(send(proof(key, method, htu.rsplit("/", 1)[0] + "/other", a.token))))
    elif mode == "othermethod":
        other = "GET" if method != "GET" else "POST"
        out.append(answer(send(proof(key, other, htu, a.token))))
    elif mode == "otherkey":
        out.append(answer(send(proof(jwk.JWK.generate(kty="EC", crv="P-256"), method, htu, a.token))))
    elif mode == "stale":
        out.append(answer(send(proof(key, method, htu, a.token, iat=int(time.time()) - 600))))
    elif mode == "bearer":
        out.append(answer(send(None, scheme="Bearer")))
    elif mode == "nonce":
        r = send(proof(key, method, htu, a.token))
        out.append(answer(r))
        n = r.headers.get("DPoP-Nonce")
        if r.status_code == 401 and n and "use_dpop_nonce" in r.headers.get("WWW-Authenticate", ""):
            out.append(answer(send(proof(key, method, htu, a.token, nonce=n))))
    else:
        sys.exit("unknown --mode " + mode)
    json.dump({"responses": out}, sys.stdout)
    print()


if __name__ == "__main__":
    main()
