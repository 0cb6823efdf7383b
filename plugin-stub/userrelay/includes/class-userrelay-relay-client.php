<?php
/**
 * The HTTP side of talking to the relay: signed event batches, health, the connection test, and
 * the read-only views of this site (overview, user status).
 *
 * Uses wp_remote_request(), not the wp_safe_ variants: those refuse every port but 80, 443 and
 * 8080, and a relay often listens elsewhere (8480 by default). Over HTTPS each request is
 * verified against the relay's trust anchor in the site's own CA bundle once it is learned
 * (UserRelay_Relay_Trust). Answers are returned as plain arrays; deciding what they mean for the
 * outbox is the outbox's job.
 *
 * @package UserRelay
 */

if ( ! defined( 'ABSPATH' ) ) {
	exit;
}

/**
 * Sends requests to the relay.
 */
final class UserRelay_Relay_Client {

	/** Seconds one batch may take; the relay answers only after an fsync'd commit. */
	const SEND_TIMEOUT = 15;

	/** Seconds for the connection test's requests. */
	const TEST_TIMEOUT = 5;

	/**
	 * Settings.
	 *
	 * @var UserRelay_Settings
	 */
	private $settings;

	/**
	 * The relay's trust anchor.
	 *
	 * @var UserRelay_Relay_Trust
	 */
	private $trust;

	/**
	 * Constructor.
	 *
	 * @param UserRelay_Settings $settings Settings.
	 */
	public function __construct( UserRelay_Settings $settings ) {
		$this->settings = $settings;
		$this->trust    = new UserRelay_Relay_Trust( $settings );
	}

	/**
	 * The signed body of a batch: the operation, this site and the events (already JSON).
	 *
	 * @param string[] $events Each event's JSON.
	 */
	public function events_body( array $events ): string {
		return '{"operation":"events","site":' . wp_json_encode( $this->settings->site() ) . ',"events":[' . implode( ',', $events ) . ']}';
	}

	/**
	 * POSTs one signed batch to {relay}/v1/sites/{site}/events.
	 *
	 * @param string $body       JSON made by events_body().
	 * @param string $webhook_id Stable for the same batch, so a repeat changes nothing.
	 * @param int    $timeout    Seconds.
	 * @return array{status: int|null, body: string, error: string|null, retry_after: int|null, date: int|null}
	 */
	public function post_events( string $body, string $webhook_id, int $timeout = self::SEND_TIMEOUT ): array {
		$key = $this->settings->hmac_key();
		if ( null === $key ) {
			return self::failure( implode( ' ', $this->settings->problems() ) );
		}
		$response = $this->trust->request(
			$this->events_url(),
			array(
				'method'      => 'POST',
				'timeout'     => $timeout,
				'redirection' => 0,
				'headers'     => UserRelay_Signature::headers( $key, $webhook_id, $body ),
				'body'        => $body,
				'user-agent'  => 'UserRelay-Plugin/' . USERRELAY_PLUGIN_VERSION . '; ' . home_url(),
			)
		);
		if ( ! is_wp_error( $response ) ) {
			$this->trust->learn_if_needed(); // Once: two TLS handshakes, after the visitor's answer.
		}
		return self::answer( $response );
	}

	/**
	 * GET {relay}/healthz: is the relay there at all?
	 *
	 * @return array{status: int|null, body: string, error: string|null, retry_after: int|null, date: int|null}
	 */
	public function health(): array {
		$response = $this->trust->request(
			$this->settings->url() . '/healthz',
			array(
				'method'      => 'GET',
				'timeout'     => self::TEST_TIMEOUT,
				'redirection' => 0,
			)
		);
		return self::answer( $response );
	}

	/**
	 * POST {relay}/v1/sites/{site}/ping, signed: does the relay know this site and accept its
	 * key? 200 says yes; 401 and 404 say what is wrong. Stores nothing.
	 *
	 * @return array{status: int|null, body: string, error: string|null, retry_after: int|null, date: int|null}
	 */
	public function probe(): array {
		$key = $this->settings->hmac_key();
		if ( null === $key ) {
			return self::failure( implode( ' ', $this->settings->problems() ) );
		}
		$body     = UserRelay_Signature::envelope( 'ping', $this->settings->site() );
		$response = $this->trust->request(
			$this->settings->url() . '/v1/sites/' . rawurlencode( $this->settings->site() ) . '/ping',
			array(
				'method'      => 'POST',
				'timeout'     => self::TEST_TIMEOUT,
				'redirection' => 0,
				'headers'     => UserRelay_Signature::headers( $key, 'msg_ping_' . wp_generate_password( 20, false ), $body ),
				'body'        => $body,
				'user-agent'  => 'UserRelay-Plugin/' . USERRELAY_PLUGIN_VERSION . '; ' . home_url(),
			)
		);
		if ( ! is_wp_error( $response ) ) {
			$this->trust->learn_if_needed();
		}
		return self::answer( $response );
	}

	/**
	 * POST {relay}/v1/sites/{site}/overview, signed: this site's links at the relay, their
	 * state, and this site's queued and dead-lettered changes (read-only, this site only).
	 *
	 * @return array{status: int|null, body: string, error: string|null, retry_after: int|null, date: int|null}
	 */
	public function overview(): array {
		$key = $this->settings->hmac_key();
		if ( null === $key ) {
			return self::failure( implode( ' ', $this->settings->problems() ) );
		}
		$body     = UserRelay_Signature::envelope( 'overview', $this->settings->site() );
		$response = $this->trust->request(
			$this->settings->url() . '/v1/sites/' . rawurlencode( $this->settings->site() ) . '/overview',
			array(
				'method'      => 'POST',
				'timeout'     => self::TEST_TIMEOUT,
				'redirection' => 0,
				'headers'     => UserRelay_Signature::headers( $key, 'msg_overview_' . wp_generate_password( 20, false ), $body ),
				'body'        => $body,
				'user-agent'  => 'UserRelay-Plugin/' . USERRELAY_PLUGIN_VERSION . '; ' . home_url(),
			)
		);
		return self::answer( $response );
	}

	/**
	 * POST {relay}/v1/sites/{site}/user-status, signed: per partner site, the state of the last
	 * change of each of these users of this site (read-only, this site's users only).
	 *
	 * @param int[] $user_ids This site's user ids (1 to 100).
	 * @param int   $timeout  Seconds (a wp-admin page waits for it).
	 * @return array{status: int|null, body: string, error: string|null, retry_after: int|null, date: int|null}
	 */
	public function user_status( array $user_ids, int $timeout = self::TEST_TIMEOUT ): array {
		$key = $this->settings->hmac_key();
		if ( null === $key ) {
			return self::failure( implode( ' ', $this->settings->problems() ) );
		}
		$body     = UserRelay_Signature::envelope( 'user-status', $this->settings->site(), array( 'user_ids' => array_values( array_map( 'intval', $user_ids ) ) ) );
		$response = $this->trust->request(
			$this->settings->url() . '/v1/sites/' . rawurlencode( $this->settings->site() ) . '/user-status',
			array(
				'method'      => 'POST',
				'timeout'     => $timeout,
				'redirection' => 0,
				'headers'     => UserRelay_Signature::headers( $key, 'msg_user_status_' . wp_generate_password( 20, false ), $body ),
				'body'        => $body,
				'user-agent'  => 'UserRelay-Plugin/' . USERRELAY_PLUGIN_VERSION . '; ' . home_url(),
			)
		);
		return self::answer( $response );
	}

	/**
	 * The signed ping of the relay, summed up for the relay's own connection test: the relay's
	 * URL as set here, the status it answered (null when it could not be reached) and why not.
	 *
	 * @return array{url: string, status: int|null, error: string|null}
	 */
	public function relay_check(): array {
		$answer = $this->probe();
		return array(
			'url'    => $this->settings->url(),
			'status' => $answer['status'],
			'error'  => 200 === $answer['status'] ? null : self::error_text( $answer ),
		);
	}

	/**
	 * The relay's events URL for this site.
	 */
	public function events_url(): string {
		return $this->settings->url() . '/v1/sites/' . rawurlencode( $this->settings->site() ) . '/events';
	}

	/**
	 * The error text of a relay answer: its {"error": ...} or the start of the body.
	 *
	 * @param array $answer An answer of this class.
	 */
	public static function error_text( array $answer ): string {
		if ( null !== $answer['error'] ) {
			return $answer['error'];
		}
		$decoded = json_decode( $answer['body'], true );
		if ( is_array( $decoded ) && isset( $decoded['error'] ) && is_string( $decoded['error'] ) ) {
			return $decoded['error'];
		}
		return trim( substr( wp_strip_all_tags( $answer['body'] ), 0, 200 ) );
	}

	/**
	 * An answer array from a wp_remote_* result.
	 *
	 * @param array|WP_Error $response The result.
	 */
	private static function answer( $response ): array {
		if ( is_wp_error( $response ) ) {
			return self::failure( $response->get_error_message() );
		}
		$retry_after = wp_remote_retrieve_header( $response, 'retry-after' );
		$date        = wp_remote_retrieve_header( $response, 'date' );
		return array(
			'status'      => (int) wp_remote_retrieve_response_code( $response ),
			'body'        => (string) wp_remote_retrieve_body( $response ),
			'error'       => null,
			'retry_after' => is_numeric( $retry_after ) ? max( 0, (int) $retry_after ) : null,
			'date'        => is_string( $date ) && '' !== $date && false !== strtotime( $date ) ? strtotime( $date ) : null,
		);
	}

	/**
	 * An answer for a request that got no HTTP response.
	 *
	 * @param string $error Why.
	 */
	private static function failure( string $error ): array {
		return array(
			'status'      => null,
			'body'        => '',
			'error'       => $error,
			'retry_after' => null,
			'date'        => null,
		);
	}
}
