"""Signs a body the way the product doc describes and POSTs it; prints the HTTP status.

Usage: sign.py URL KEY SECRET BODY
"""
import hashlib
import hmac
import sys
import time
import urllib.error
import urllib.request


def main():
    url, key, secret, body = sys.argv[1:5]
    raw = body.encode()
    timestamp = str(int(time.time()))
    digest = hmac.new(secret.encode(), timestamp.encode() + b"." + raw, hashlib.sha256).hexdigest()
    request = urllib.request.Request(url, data=raw, method="POST", headers={
        "Content-Type": "application/json",
        "x-wappchat-key": key,
        "x-wappchat-timestamp": timestamp,
        "x-wappchat-signature": "sha256=" + digest,
    })
    try:
        with urllib.request.urlopen(request) as response:
            print(response.status)
    except urllib.error.HTTPError as error:
        print(error.code)


if __name__ == "__main__":
    main()
