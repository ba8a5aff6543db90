# The auth endpoint for pusher-js and Laravel Echo, as a drop-in script:
#
#   new Pusher(key, {wsHost, wsPort, forceTLS: false, enabledTransports: ["ws"],
#                    channelAuthorization: {endpoint: "/pusher_auth.py"},
#                    userAuthentication: {endpoint: "/pusher_auth.py"}})
#
# pusher-js POSTs socket_id and channel_name (for a private-, private-encrypted- or
# presence- channel), or socket_id alone (for pusher:signin); this answers what Pusher's
# server SDKs' authenticate() and authenticate_user() would.
#
# A demo: the user is whoever the `user` cookie names, as a guest ("guest-" + NAME, so
# it can never sign as a real user of yours). A real application takes the user from
# its own session, and decides here which channels that user may join.
#
# `pusher_auth`, `pusher_user_auth`, `request` and `response` are put here by the host.

import re

GUEST = "guest-"
MAX_NAME = 64
# Pusher user ids are made of channel-name characters (they name #server-to-user- channels).
NOT_IN_AN_ID = re.compile(r"[^A-Za-z0-9_\-=@,.;]")

name = request.cookies.get("user", "").strip()
if not name or len(name) > MAX_NAME or not name.isprintable():
    response.json({"error": "sign in first (the demo's `user` cookie)"}, 403)
    exit()
user = NOT_IN_AN_ID.sub("_", name if name.startswith(GUEST) else GUEST + name)

socket_id = request.form.get("socket_id", "")
channel = request.form.get("channel_name")
response.headers["Cache-Control"] = "no-store"
if channel is None:
    response.json(pusher_user_auth(socket_id, {"id": user, "user_info": {"name": name}}))
elif channel.startswith("presence-"):
    response.json(pusher_auth(socket_id, channel, {"user_id": user, "user_info": {"name": name}}))
else:
    response.json(pusher_auth(socket_id, channel))
