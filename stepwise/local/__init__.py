"""The local stack: the synthesised CDK template run on moto, in one process, on 127.0.0.1."""
