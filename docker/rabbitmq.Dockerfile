# RabbitMQ with its management plugin, from Debian's rabbitmq-server, for machines with no registry:
# `scripts/docker-up.sh` makes the base (`coffee/rabbitmq-base`) with mmdebstrap and tags the result with the name
# the compose file uses, so compose finds it and pulls nothing.
FROM coffee/rabbitmq-base
# The nodes log in as guest from other containers: Debian's default allows guest from loopback only.
RUN rabbitmq-plugins --offline enable rabbitmq_management \
    && printf 'loopback_users.guest = false\nlisteners.tcp.default = 5672\n' > /etc/rabbitmq/rabbitmq.conf
ENV RABBITMQ_LOGS=-
EXPOSE 5672 15672
CMD ["rabbitmq-server"]
