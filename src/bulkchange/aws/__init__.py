"""bulkchange on AWS: the SQS-triggered Lambda handler, the callback handler, credentials by reference."""
