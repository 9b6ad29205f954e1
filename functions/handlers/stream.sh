#!/bin/sh
# The stream function's entry point on Lambda. The AWS Lambda Web Adapter's layer wraps the runtime
# (AWS_LAMBDA_EXEC_WRAPPER=/opt/bootstrap), which runs the function's handler, this file, instead of the Python
# runtime: the web app then listens on 127.0.0.1:$AWS_LWA_PORT and the adapter streams its answers back through the
# function URL. The dependency layer (/opt/python), the code (/var/task) and the runtime's own libraries (boto3, in
# $LAMBDA_RUNTIME_DIR) go on the path as the runtime would put them, as the adapter's own Python examples do.
cd "$LAMBDA_TASK_ROOT" || exit 1
PYTHONPATH="/opt/python:$LAMBDA_TASK_ROOT${PYTHONPATH:+:$PYTHONPATH}${LAMBDA_RUNTIME_DIR:+:$LAMBDA_RUNTIME_DIR}" \
    exec python3 -m functions.handlers.stream
