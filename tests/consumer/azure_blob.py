"""The Azure Blob side of the Azure tests, through Microsoft's own client (azure-storage-blob), against the
Azurite server a test started (AZURITE_BLOB_STORAGE_URL, Azurite's well-known development account):

    python tests/consumer/azure_blob.py create CONTAINER
    python tests/consumer/azure_blob.py upload CONTAINER PREFIX DIR    # every file under DIR, paths kept
    python tests/consumer/azure_blob.py list CONTAINER PREFIX          # blob names, JSON
"""
import json
import os
import sys

from azure.storage.blob import BlobServiceClient

ACCOUNT = "devstoreaccount1"
# Azurite's published development key (https://github.com/Azure/Azurite#default-storage-account).
KEY = "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="


def service():
    url = os.environ["AZURITE_BLOB_STORAGE_URL"].rstrip("/")
    return BlobServiceClient.from_connection_string(
        f"DefaultEndpointsProtocol=http;AccountName={ACCOUNT};AccountKey={KEY};BlobEndpoint={url}/{ACCOUNT};")


def create(container):
    service().create_container(container)
    print(json.dumps({"created": container}))


def upload(container, prefix, folder):
    c = service().get_container_client(container)
    n = 0
    for root, _, files in os.walk(folder):
        for f in files:
            path = os.path.join(root, f)
            name = prefix.rstrip("/") + "/" + os.path.relpath(path, folder)
            with open(path, "rb") as data:
                c.upload_blob(name, data, overwrite=True)
            n += 1
    print(json.dumps({"uploaded": n}))


def list_blobs(container, prefix):
    c = service().get_container_client(container)
    print(json.dumps(sorted(b.name for b in c.list_blobs(name_starts_with=prefix))))


if __name__ == "__main__":
    cmd, args = sys.argv[1], sys.argv[2:]
    {"create": create, "upload": upload, "list": list_blobs}[cmd](*args)
