"""The AMQP 0-9-1 (RabbitMQ) channel layer: ``layers_amqp.AMQPChannelLayer`` or ``layers.from_url("amqp://...")``."""

from .layer import AMQPChannelLayer

__all__ = ["AMQPChannelLayer"]
