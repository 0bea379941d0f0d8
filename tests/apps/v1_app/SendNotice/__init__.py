import json


def main(phoneNumber, message):
    message.set(json.dumps({"body": "Your order shipped", "to": phoneNumber}))
    return f"sent to {phoneNumber}"
