#!/usr/bin/env bash
# The local stack without Docker: a single-node Apache Kafka broker (KRaft, jars from Maven
# Central) and Debian's redis-server, both on 127.0.0.1; and Debian's chromium, which the drift
# report test renders the page in (headless).
#
#   docker/local-stack.sh up | down | status
#
# Idempotent: `up` leaves running services alone, `down` on a stopped stack is a no-op.
# Settings (environment):
#   KAFKA_PORT (9092)  KAFKA_CONTROLLER_PORT (9093)  REDIS_PORT (6379)
#   STREAMER_STACK_DIR   run folder: data, logs, pids          (default: <repo>/.stack)
#   STREAMER_KAFKA_CACHE jar cache, reused across runs and clones (default: ~/.cache/streamer)
#   KAFKA_HEAP           broker heap                            (default: 768m)
#   KAFKA_SSL_PORT       also listen with TLS on this port; needs KAFKA_SSL_KEYSTORE (PEM: the
#                        PKCS#8 key and certificate chain) and KAFKA_SSL_CA (PEM)
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo=$(dirname "$here")
kafka_version=$(sed -n 's:.*<kafka.version>\(.*\)</kafka.version>.*:\1:p' "$here/kafka/pom.xml")

KAFKA_PORT=${KAFKA_PORT:-9092}
KAFKA_CONTROLLER_PORT=${KAFKA_CONTROLLER_PORT:-9093}
REDIS_PORT=${REDIS_PORT:-6379}
KAFKA_HEAP=${KAFKA_HEAP:-768m}
stack_dir=${STREAMER_STACK_DIR:-$repo/.stack}
cache_dir=${STREAMER_KAFKA_CACHE:-$HOME/.cache/streamer}/kafka-$kafka_version
kafka_dir=$stack_dir/kafka-$KAFKA_PORT
redis_dir=$stack_dir/redis-$REDIS_PORT

say() { printf 'local-stack: %s\n' "$*" >&2; }
die() { say "$*"; exit 1; }

port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

pid_alive() { [[ -f $1 ]] && kill -0 "$(cat "$1")" 2>/dev/null; }

need_java() {
  command -v java >/dev/null ||
    die "java not found. Kafka $kafka_version needs Java 17+: apt-get install openjdk-17-jre-headless"
  local major
  major=$(java -XshowSettings:properties -version 2>&1 | sed -n 's/^ *java.specification.version = //p')
  [[ ${major%%.*} -ge 17 ]] ||
    die "java $major found; Kafka $kafka_version needs Java 17+: apt-get install openjdk-17-jre-headless"
}

fetch_kafka() {
  [[ -f $cache_dir/.complete ]] && return 0
  command -v mvn >/dev/null ||
    die "mvn not found; it fetches the Kafka jars from Maven Central: apt-get install maven"
  say "fetching Apache Kafka $kafka_version and its runtime dependencies into $cache_dir"
  rm -rf "$cache_dir" && mkdir -p "$cache_dir/libs"
  mvn -q -B -Dstyle.color=never -f "$here/kafka/pom.xml" dependency:copy-dependencies \
    -DincludeScope=runtime -DoutputDirectory="$cache_dir/libs" ||
    die "Maven could not fetch org.apache.kafka:kafka_2.13:$kafka_version (is Maven Central reachable?)"
  touch "$cache_dir/.complete"
}

kafka_java=(java -Xms"$KAFKA_HEAP" -Xmx"$KAFKA_HEAP" -XX:+UseG1GC -Djava.awt.headless=true
  -Dkafka.logs.dir="$kafka_dir/logs" -Dlog4j2.configurationFile="$here/kafka/log4j2.properties"
  -cp "$cache_dir/libs/*")

write_broker_config() {
  mkdir -p "$kafka_dir/data" "$kafka_dir/logs"
  cat >"$kafka_dir/server.properties" <<EOF
process.roles=broker,controller
node.id=1
listeners=PLAINTEXT://127.0.0.1:$KAFKA_PORT,CONTROLLER://127.0.0.1:$KAFKA_CONTROLLER_PORT
advertised.listeners=PLAINTEXT://127.0.0.1:$KAFKA_PORT
controller.listener.names=CONTROLLER
listener.security.protocol.map=PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT
inter.broker.listener.name=PLAINTEXT
controller.quorum.bootstrap.servers=127.0.0.1:$KAFKA_CONTROLLER_PORT
log.dirs=$kafka_dir/data
num.partitions=4
offsets.topic.replication.factor=1
offsets.topic.num.partitions=8
transaction.state.log.replication.factor=1
transaction.state.log.min.isr=1
transaction.state.log.num.partitions=8
share.coordinator.state.topic.replication.factor=1
share.coordinator.state.topic.min.isr=1
default.replication.factor=1
min.insync.replicas=1
group.initial.rebalance.delay.ms=0
auto.create.topics.enable=false
EOF
  if [[ -n ${KAFKA_SSL_PORT:-} ]]; then
    [[ -f ${KAFKA_SSL_KEYSTORE:-} && -f ${KAFKA_SSL_CA:-} ]] ||
      die "KAFKA_SSL_PORT needs KAFKA_SSL_KEYSTORE and KAFKA_SSL_CA (PEM files)"
    sed -i "s|^listeners=.*|&,SSL://127.0.0.1:$KAFKA_SSL_PORT|; s|^advertised.listeners=.*|&,SSL://127.0.0.1:$KAFKA_SSL_PORT|;
      s|^listener.security.protocol.map=.*|&,SSL:SSL|" "$kafka_dir/server.properties"
    cat >>"$kafka_dir/server.properties" <<EOF
ssl.keystore.type=PEM
ssl.keystore.location=$KAFKA_SSL_KEYSTORE
ssl.truststore.type=PEM
ssl.truststore.location=$KAFKA_SSL_CA
ssl.client.auth=none
EOF
  fi
}

kafka_up() {
  if pid_alive "$kafka_dir/pid"; then
    say "kafka already running on 127.0.0.1:$KAFKA_PORT (pid $(cat "$kafka_dir/pid"))"
    return 0
  fi
  port_open "$KAFKA_PORT" && die "port $KAFKA_PORT is taken by another process; set KAFKA_PORT"
  need_java
  fetch_kafka
  write_broker_config
  if [[ ! -f $kafka_dir/data/meta.properties ]]; then
    "${kafka_java[@]}" kafka.tools.StorageTool format --standalone \
      --cluster-id "$("${kafka_java[@]}" kafka.tools.StorageTool random-uuid)" \
      --config "$kafka_dir/server.properties" >"$kafka_dir/logs/format.log" 2>&1 ||
      die "formatting KRaft storage failed; see $kafka_dir/logs/format.log"
  fi
  : >"$kafka_dir/logs/server.log"
  nohup "${kafka_java[@]}" kafka.Kafka "$kafka_dir/server.properties" \
    </dev/null >"$kafka_dir/logs/stdout.log" 2>&1 &
  echo $! >"$kafka_dir/pid"
  say "kafka $kafka_version starting on 127.0.0.1:$KAFKA_PORT (pid $!)"
}

kafka_ready() { port_open "$KAFKA_PORT" && grep -q "Kafka Server started" "$kafka_dir/logs/server.log" 2>/dev/null; }

sudo_prefix() { [[ $(id -u) -eq 0 ]] || echo sudo; }

# Debian package $2 unless command $1 exists already.
debian_install() {
  command -v "$1" >/dev/null && return 0
  say "$1 not found; installing Debian's $2"
  local sudo
  sudo=$(sudo_prefix)
  $sudo apt-get install -y -q --no-install-recommends "$2" >/dev/null 2>&1 ||
    { $sudo apt-get update -q >/dev/null && $sudo apt-get install -y -q --no-install-recommends "$2" >/dev/null; }
}

redis_up() {
  if ! command -v redis-server >/dev/null; then
    debian_install redis-server redis-server || die "could not install redis-server: run 'apt-get install redis-server' as root"
    # Debian's package starts a system-wide server on 6379; ours is started below.
    command -v systemctl >/dev/null && $(sudo_prefix) systemctl disable --now redis-server >/dev/null 2>&1 || true
  fi
  if pid_alive "$redis_dir/pid"; then
    say "redis already running on 127.0.0.1:$REDIS_PORT (pid $(cat "$redis_dir/pid"))"
    return 0
  fi
  port_open "$REDIS_PORT" && die "port $REDIS_PORT is taken by another process; set REDIS_PORT"
  mkdir -p "$redis_dir"
  redis-server --bind 127.0.0.1 --port "$REDIS_PORT" --save "" --appendonly no \
    --daemonize yes --dir "$redis_dir" --pidfile "$redis_dir/pid" --logfile "$redis_dir/redis.log"
  say "redis starting on 127.0.0.1:$REDIS_PORT"
}

redis_ready() { [[ $(redis-cli -h 127.0.0.1 -p "$REDIS_PORT" ping 2>/dev/null) == PONG ]]; }

wait_for() {
  local what=$1 check=$2 log=$3 deadline=$((SECONDS + 90))
  until $check; do
    ((SECONDS < deadline)) || die "$what did not answer within 90 s; see $log"
    sleep 0.5
  done
  say "$what is up"
}

stop_pid() {
  local pidfile=$1 what=$2
  if pid_alive "$pidfile"; then
    local pid
    pid=$(cat "$pidfile")
    kill "$pid"
    for _ in $(seq 60); do kill -0 "$pid" 2>/dev/null || break; sleep 0.5; done
    kill -0 "$pid" 2>/dev/null && kill -9 "$pid"
    say "$what stopped"
  else
    say "$what not running"
  fi
  rm -f "$pidfile"
}

status() {
  local rc=0
  if pid_alive "$kafka_dir/pid" && kafka_ready; then
    echo "kafka: up on 127.0.0.1:$KAFKA_PORT (pid $(cat "$kafka_dir/pid"))"
  else
    echo "kafka: down"; rc=1
  fi
  if pid_alive "$redis_dir/pid" && redis_ready; then
    echo "redis: up on 127.0.0.1:$REDIS_PORT (pid $(cat "$redis_dir/pid"))"
  else
    echo "redis: down"; rc=1
  fi
  return $rc
}

case ${1:-} in
  up)
    kafka_up
    redis_up
    # headless, for the drift report's rendering test, which is skipped without it
    debian_install chromium chromium || say "could not install chromium: the drift report's browser test will skip"
    wait_for "kafka on 127.0.0.1:$KAFKA_PORT" kafka_ready "$kafka_dir/logs/server.log"
    wait_for "redis on 127.0.0.1:$REDIS_PORT" redis_ready "$redis_dir/redis.log"
    ;;
  down)
    stop_pid "$kafka_dir/pid" kafka
    stop_pid "$redis_dir/pid" redis
    ;;
  status) status ;;
  *) echo "usage: $0 up|down|status" >&2; exit 2 ;;
esac
