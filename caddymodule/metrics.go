package caddymodule

import (
	"errors"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// authMetrics counts decisions and times authentication, with and without the
// time spent reading a signed body (which depends on the client, not on us).
type authMetrics struct {
	requests *prometheus.CounterVec
	duration *prometheus.HistogramVec
	// The series every accepted request touches, resolved once: WithLabelValues
	// hashes its labels and takes the vector's lock on each call.
	accepted           prometheus.Counter
	included, excluded prometheus.Observer
}

func newAuthMetrics(registry prometheus.Registerer) (*authMetrics, error) {
	m := &authMetrics{
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: "caddy",
			Subsystem: "wappchat",
			Name:      "requests_total",
			Help:      "Requests decided by wappchat_auth, by result (accepted|rejected) and code (ok or the error code).",
		}, []string{"result", "code"}),
		duration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Namespace: "caddy",
			Subsystem: "wappchat",
			Name:      "auth_duration_seconds",
			Help:      "Time wappchat_auth spent deciding, with the body read excluded or included.",
			Buckets:   []float64{.00001, .00005, .0001, .00025, .0005, .001, .0025, .005, .01, .05, .25, 1},
		}, []string{"body"}),
	}
	var err error
	if m.requests, err = register(registry, m.requests); err != nil {
		return nil, err
	}
	if m.duration, err = register(registry, m.duration); err != nil {
		return nil, err
	}
	buffers := prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Namespace: "caddy",
		Subsystem: "wappchat",
		Name:      "body_buffers_in_use",
		Help:      "Signed-body buffers taken from the pool and not yet returned.",
	}, func() float64 { return float64(buffersInUse.Load()) })
	if _, err = register[prometheus.Collector](registry, buffers); err != nil {
		return nil, err
	}
	m.accepted = m.requests.WithLabelValues("accepted", "ok")
	m.included = m.duration.WithLabelValues("included")
	m.excluded = m.duration.WithLabelValues("excluded")
	return m, nil
}

// register adds c to the registry, or returns the collector already there.
func register[C prometheus.Collector](registry prometheus.Registerer, c C) (C, error) {
	err := registry.Register(c)
	if existing, ok := errors.AsType[prometheus.AlreadyRegisteredError](err); ok {
		return existing.ExistingCollector.(C), nil
	}
	return c, err
}

// observe records one decision: rej is nil when the request was accepted.
func (m *authMetrics) observe(rej *Rejection, started time.Time, bodyRead time.Duration) {
	if rej != nil {
		m.requests.WithLabelValues("rejected", rej.Code).Inc()
	} else {
		m.accepted.Inc()
	}
	total := time.Since(started)
	m.included.Observe(total.Seconds())
	m.excluded.Observe((total - bodyRead).Seconds())
}
