# The drop-in sender, like the seed's send.php: /send.py?message=hello
# `broadcast`, `request` and `response` are put here by the host; this import is
# only for editors and linters, the script works without it.
from realtime_broadcast import broadcast

payload = request.json if isinstance(request.json, dict) else {}
message = request.values.get("message") or payload.get("message", "")
if not isinstance(message, str):  # {"message": 42} is the client's mistake: a 400, not a 500
    response.status = 400
    print("message must be a string")
    exit()

# Over the size limit, broadcast() raises MessageTooLarge: the host answers 413, nothing is sent.
clients = broadcast(message or "Hello from send.py!")

response.content_type = "text/plain; charset=utf-8"
print(f"Sent to {clients} client{'' if clients == 1 else 's'}.")
