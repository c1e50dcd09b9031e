"""
A RefServerLite client written the way RefServerLite's own import script talks to its
server (requests, form login, multipart upload with data= and files=), used to show that
refserver-lite serves such a client unchanged. Prints one JSON line per step.

usage: refserver_client.py BASE_URL USERNAME PASSWORD PDF_PATH
"""
import json
import sys

import requests


def step(name, response):
    try:
        body = response.json()
    except ValueError:
        body = response.text
    print(json.dumps({"step": name, "status": response.status_code, "body": body}))
    sys.stdout.flush()
    return body


def main():
    base, username, password, pdf_path = sys.argv[1:5]
    login = requests.post(f"{base}/api/v1/auth/login", data={"username": username, "password": password})
    token = step("login", login).get("access_token")
    headers = {"Authorization": f"Bearer {token}"}

    def upload(key, title, filename, year):
        form_data = {
            "title": title,
            "authors": json.dumps(["Ada Lovelace", "Charles Babbage"]),
            "year": year,  # None is left out by requests, as in the original script
            "zotero_key": key,
            "zotero_library_id": "475425",
            "zotero_version": 12,
            "collection_keys": json.dumps(["COLL2345"]),
            "tags": json.dumps(["analytical engine"]),
        }
        with open(pdf_path, "rb") as f:
            files = {"file": (filename, f, "application/pdf")}
            return requests.post(f"{base}/api/v1/papers/upload_with_metadata", data=form_data, files=files, headers=headers)

    first = step("upload", upload("ABCD2345", "Sketch of the Analytical Engine", "Ménabréa – Sketch.pdf", 1843))
    step("upload-again", upload("ABCD2345", "Sketch of the Analytical Engine", "Ménabréa – Sketch.pdf", 1843))
    step("upload-no-year", upload("EFGH2345", "Notes by the Translator", "notes.pdf", None))
    step("job", requests.get(f"{base}/api/v1/job/{first.get('job_id')}", headers=headers))
    step("document", requests.get(f"{base}/api/v1/document/{first.get('doc_id')}", headers=headers))


if __name__ == "__main__":
    main()
