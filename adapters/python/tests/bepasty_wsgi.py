"""WSGI entry of the test's own for bepasty (an unmodified PyPI application): bepasty's own
`create_app()`, plus the one line that puts its sessions in stickless. `STICKLESS=0` leaves
that line out (the control: bepasty's own signed-cookie session)."""

import os

import stickless_session
from bepasty.app import create_app

app = create_app()
if os.environ.get("STICKLESS", "1") != "0":
    app.session_interface = stickless_session.SessionInterface()  # the one line
