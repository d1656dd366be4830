version: '2'
services:
  keepalived:
    image: ${image}
    network_mode: host
    cap_add:
      - NET_ADMIN
      - NET_BROADCAST
      - NET_RAW
    volumes:
      - /var/run:/host-run:ro
    restart: always
    labels:
      io.rancher.container.dns: 'true'
      io.rancher.scheduler.global: 'true'
      io.rancher.container.pull_image: always
{{- if .Values.host_label }}
      io.rancher.scheduler.affinity:host_label: ${host_label}
{{- end }}
    environment:
      DOCKER_HOST: unix:///host-run/docker.sock
      VIRTUAL_IP: ${VIRTUAL_IP}
      VIRTUAL_MASK: ${VIRTUAL_MASK}
      VRID: ${VRID}
      INTERFACE: ${INTERFACE}
      ADVERT_INT: ${ADVERT_INT}
      PRIORITY: ${PRIORITY}
      NOPREEMPT: ${NOPREEMPT}
{{- if .Values.CHECK_PORT }}
      CHECK_PORT: ${CHECK_PORT}
{{- end }}
{{- if .Values.CHECK_HTTP_PATH }}
      CHECK_HTTP_PATH: ${CHECK_HTTP_PATH}
{{- end }}
{{- if .Values.AUTH_PASS }}
      AUTH_PASS: ${AUTH_PASS}
{{- end }}
{{- if .Values.UNICAST_PEERS }}
      UNICAST_PEERS: ${UNICAST_PEERS}
{{- end }}
{{- if .Values.LABEL_SELECTOR }}
      LABEL_SELECTOR: ${LABEL_SELECTOR}
{{- end }}
