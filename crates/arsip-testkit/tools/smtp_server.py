"""A real SMTP server for arsip's alert tests (aiosmtpd): STARTTLS required (or not offered,
with --no-starttls), AUTH only after TLS, one account; every message is stored as an .eml
file in the spool directory. Prints "READY <port>" once listening.

    smtp_server.py --spool DIR --cert CERT --key KEY --user U --password P [--no-starttls]
"""
import argparse
import logging
import asyncio
import os
import socket
import ssl
import sys
import uuid
import warnings

warnings.filterwarnings("ignore", category=DeprecationWarning)
logging.getLogger("mail.log").setLevel(logging.ERROR)

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, LoginPassword


class Spool:
    def __init__(self, directory):
        self.directory = directory

    async def handle_DATA(self, server, session, envelope):
        name = os.path.join(self.directory, f"{uuid.uuid4().hex}.eml")
        with open(name + ".tmp", "wb") as f:
            f.write(envelope.original_content)
        os.rename(name + ".tmp", name)
        return "250 OK"


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--spool", required=True)
    p.add_argument("--cert", required=True)
    p.add_argument("--key", required=True)
    p.add_argument("--user", required=True)
    p.add_argument("--password", required=True)
    p.add_argument("--no-starttls", action="store_true")
    a = p.parse_args()

    def authenticate(server, session, envelope, mechanism, auth_data):
        ok = isinstance(auth_data, LoginPassword) and \
            auth_data.login.decode() == a.user and auth_data.password.decode() == a.password
        with open(os.path.join(a.spool, "auth.log"), "a") as f:
            f.write(f"{mechanism} {'ok' if ok else 'refused'} tls={'true' if session.ssl is not None else 'false'}\n")
        return AuthResult(success=ok, handled=False)

    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    kwargs = dict(hostname="127.0.0.1", port=port, authenticator=authenticate,
                  auth_require_tls=True)
    if not a.no_starttls:
        ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        ctx.load_cert_chain(a.cert, a.key)
        kwargs.update(tls_context=ctx, require_starttls=True)
    c = Controller(Spool(a.spool), **kwargs)
    c.start()
    print(f"READY {port}", flush=True)
    try:
        sys.stdin.read()  # until the test closes stdin or dies
    finally:
        c.stop()


if __name__ == "__main__":
    main()
