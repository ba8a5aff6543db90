# Connection tokens for app/chat.html: GET /chat_token.py?user=NAME answers
# {"token": "<JWT>", "user": "guest-NAME", "expire_in": SECONDS}. centrifuge-js calls it again
# (its getToken) before the token expires, so the connection is refreshed in place.
#
# A demo: whoever asks gets a token for the name they typed, as a guest: the user id is
# "guest-" + NAME, so this script can never sign as a real user of yours (whose ids do
# not start with "guest-"), even once a real secret is set. A real application mints
# the token for the user its own session says is logged in, never for a name taken
# from the query string.
#
# `connection_token`, `request` and `response` are put here by the host.

GUEST = "guest-"
MAX_NAME = 64
# Tokens live an hour unless ?expire_in=SECONDS asks for less (the tests use a few
# seconds to watch a refresh); never less than 2 s, never more than an hour.
MIN_EXPIRE_IN, MAX_EXPIRE_IN = 2.0, 3600.0

user = request.values.get("user", "").strip()
if not user or len(user) > MAX_NAME or not user.isprintable():
    response.status = 400
    response.json({"error": f"user must be 1 to {MAX_NAME} printable characters"})
    exit()
if not user.startswith(GUEST):
    user = GUEST + user

try:
    expire_in = float(request.values.get("expire_in", MAX_EXPIRE_IN))
except ValueError:
    expire_in = MAX_EXPIRE_IN
if expire_in != expire_in:  # NaN
    expire_in = MAX_EXPIRE_IN
expire_in = min(max(expire_in, MIN_EXPIRE_IN), MAX_EXPIRE_IN)

response.headers["Cache-Control"] = "no-store"
response.json(
    {"token": connection_token(user, expire_in=expire_in), "user": user, "expire_in": expire_in}
)
