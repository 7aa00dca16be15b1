"""A real S3 API for tests of object-storage outputs: moto's server, in the test process, on a free port.

Import the fixture into a test module (`from tests.s3_fixtures import s3_bucket`)."""
from __future__ import annotations

import pytest


@pytest.fixture(scope="module")
def s3_bucket():
    """An empty bucket on moto's server; pyarrow reaches it through the standard AWS_* variables, as a job's
    `--env` would set them (restored afterwards). Yields the bucket's URI."""
    import boto3
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    env = {"AWS_ENDPOINT_URL": f"http://{host}:{port}", "AWS_ACCESS_KEY_ID": "testing",
           "AWS_SECRET_ACCESS_KEY": "testing", "AWS_REGION": "us-east-1", "AWS_EC2_METADATA_DISABLED": "true"}
    try:
        with pytest.MonkeyPatch.context() as mp:
            for k, v in env.items():
                mp.setenv(k, v)
            boto3.client("s3", endpoint_url=env["AWS_ENDPOINT_URL"], region_name="us-east-1").create_bucket(
                Bucket="trainyard-bundles")
            yield "s3://trainyard-bundles"
    finally:
        server.stop()
