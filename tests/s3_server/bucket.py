"""What tests/s3.rs asks of the S3 server, done with boto3 (AWS's own SDK), not the agent's code.
The server checks every request's signature (moto with INITIAL_NO_AUTH_ACTION_COUNT=3): the
keys are in AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, but for `setup`.

    bucket.py ENDPOINT setup -          the server's first three requests (not checked): a user
        with every permission and its key; then, with it, a role it may assume (S3 only) and a
        user without any permission; prints their keys and the role's ARN as JSON
    bucket.py ENDPOINT create BUCKET    makes the bucket
    bucket.py ENDPOINT dump BUCKET      prints every object as one JSON line:
        {"key": ..., "size": ..., "content_type": ..., "records": [...]}
        (the object gunzipped and read as NDJSON, each line parsed; a torn object is an error)
    bucket.py ENDPOINT fetch BUCKET DIR writes every object as it is to DIR/<n>.bin and prints
        one JSON line an object: {"key": ..., "size": ..., "content_type": ..., "path": ...}
    bucket.py ENDPOINT uploads BUCKET   prints the multipart uploads still open, as a JSON list
    bucket.py ENDPOINT put BUCKET KEY TEXT  writes TEXT gzipped at KEY (another writer's object)
"""

import gzip
import json
import os
import sys

import boto3
from botocore.config import Config


def main():
    endpoint, command, bucket = sys.argv[1:4]
    if command == "setup":
        setup(endpoint)
        return
    s3 = boto3.client(
        "s3",
        endpoint_url=endpoint,
        region_name="us-east-1",
        aws_access_key_id=os.environ["AWS_ACCESS_KEY_ID"],
        aws_secret_access_key=os.environ["AWS_SECRET_ACCESS_KEY"],
        config=Config(s3={"addressing_style": "path"}),
    )
    if command == "create":
        s3.create_bucket(Bucket=bucket)
    elif command == "dump":
        paginator = s3.get_paginator("list_objects_v2")
        for page in paginator.paginate(Bucket=bucket):
            for o in page.get("Contents", []):
                got = s3.get_object(Bucket=bucket, Key=o["Key"])
                body = got["Body"].read()
                text = gzip.decompress(body).decode("utf-8") if body else ""
                records = [json.loads(line) for line in text.splitlines()]
                print(
                    json.dumps(
                        {
                            "key": o["Key"],
                            "size": o["Size"],
                            "content_type": got.get("ContentType"),
                            "records": records,
                        }
                    )
                )
    elif command == "fetch":
        # Every object as it is (a Parquet file), written to DIR/<n>.bin.
        out = sys.argv[4]
        paginator = s3.get_paginator("list_objects_v2")
        n = 0
        for page in paginator.paginate(Bucket=bucket):
            for o in page.get("Contents", []):
                got = s3.get_object(Bucket=bucket, Key=o["Key"])
                path = os.path.join(out, f"{n}.bin")
                n += 1
                with open(path, "wb") as f:
                    f.write(got["Body"].read())
                print(json.dumps({"key": o["Key"], "size": o["Size"],
                                  "content_type": got.get("ContentType"), "path": path}))
    elif command == "put":
        key, text = sys.argv[4:6]
        s3.put_object(Bucket=bucket, Key=key, Body=gzip.compress(text.encode("utf-8")))
    elif command == "uploads":
        open_uploads = s3.list_multipart_uploads(Bucket=bucket).get("Uploads", [])
        print(json.dumps([u["Key"] for u in open_uploads]))
    else:
        sys.exit(f"unknown command {command}")


def policy(action):
    return json.dumps(
        {
            "Version": "2012-10-17",
            "Statement": [{"Effect": "Allow", "Action": action, "Resource": "*"}],
        }
    )


def setup(endpoint):
    def iam_with(key_id, secret):
        return boto3.client(
            "iam",
            endpoint_url=endpoint,
            region_name="us-east-1",
            aws_access_key_id=key_id,
            aws_secret_access_key=secret,
        )

    iam = iam_with("unchecked", "unchecked")
    iam.create_user(UserName="admin")
    admin = iam.create_access_key(UserName="admin")["AccessKey"]
    iam.put_user_policy(UserName="admin", PolicyName="all", PolicyDocument=policy("*"))
    iam = iam_with(admin["AccessKeyId"], admin["SecretAccessKey"])
    trust = json.dumps(
        {
            "Version": "2012-10-17",
            "Statement": [
                {"Effect": "Allow", "Principal": {"AWS": "*"}, "Action": "sts:AssumeRole"}
            ],
        }
    )
    iam.create_role(RoleName="writer", AssumeRolePolicyDocument=trust)
    iam.put_role_policy(RoleName="writer", PolicyName="s3", PolicyDocument=policy("s3:*"))
    role = iam.get_role(RoleName="writer")["Role"]["Arn"]
    iam.create_user(UserName="nobody")
    nobody = iam.create_access_key(UserName="nobody")["AccessKey"]
    print(
        json.dumps(
            {
                "access_key_id": admin["AccessKeyId"],
                "secret_access_key": admin["SecretAccessKey"],
                "role_arn": role,
                "denied_key_id": nobody["AccessKeyId"],
                "denied_secret": nobody["SecretAccessKey"],
            }
        )
    )


if __name__ == "__main__":
    main()
