<?php
/**
 * REST routes under userrelay/v1: the relay's operations (events: deliveries; ping: Test
 * Connection; users: pages of users for an initial sync; digests and snapshots: reconciliation;
 * nudge: send the outbox now), each a signed POST (protocol 2, docs/protocol.md), and flush.
 *
 * The relay's routes are public in WordPress terms (no logged-in user): permission_callback
 * checks the relay -> site signature over the raw body, that the body names this route's
 * operation and this site, and that its webhook-id is used for the first time. Parameters are
 * read from that signed body only. flush is our own loopback, authenticated by a random token
 * option.
 *
 * @package UserRelay
 */

if ( ! defined( 'ABSPATH' ) ) {
	exit;
}

/**
 * Registers and serves the plugin's REST routes.
 */
final class UserRelay_REST {

	/** The relay's operations, each a signed POST to its own route, and their callbacks. */
	const OPERATIONS = array(
		'events'    => 'receive_events',
		'ping'      => 'ping',
		'users'     => 'users',
		'digests'   => 'digests',
		'snapshots' => 'snapshots',
		'nudge'     => 'nudge',
	);

	/**
	 * The signed body of the request being served, once check_signed() accepted it.
	 *
	 * @var array
	 */
	private $signed = array();

	/**
	 * The request check_signed() accepted (WordPress asks again for the Allow header of the
	 * answer: rest_send_allow_header() calls every permission_callback of the route).
	 *
	 * @var WP_REST_Request|null
	 */
	private $accepted = null;

	/**
	 * Settings.
	 *
	 * @var UserRelay_Settings
	 */
	private $settings;

	/**
	 * Applier.
	 *
	 * @var UserRelay_Applier
	 */
	private $applier;

	/**
	 * Outbox.
	 *
	 * @var UserRelay_Outbox
	 */
	private $outbox;

	/**
	 * Constructor.
	 *
	 * @param UserRelay_Settings $settings Settings.
	 * @param UserRelay_Applier  $applier  Applier.
	 * @param UserRelay_Outbox   $outbox   Outbox.
	 */
	public function __construct( UserRelay_Settings $settings, UserRelay_Applier $applier, UserRelay_Outbox $outbox ) {
		$this->settings = $settings;
		$this->applier  = $applier;
		$this->outbox   = $outbox;
	}

	/**
	 * Hooks route registration.
	 */
	public function register(): void {
		add_action( 'rest_api_init', array( $this, 'register_routes' ) );
		add_filter( 'rest_post_dispatch', array( $this, 'name_protocol' ), 10, 3 );
	}

	/**
	 * Registers the routes.
	 */
	public function register_routes(): void {
		foreach ( self::OPERATIONS as $operation => $callback ) {
			register_rest_route(
				UserRelay_Facts::REST_NAMESPACE,
				'/' . $operation,
				array(
					array(
						'methods'             => WP_REST_Server::CREATABLE,
						'callback'            => array( $this, $callback ),
						// Public: the relay has no WordPress login. Its signature over the raw body (the
						// relay -> site secret), the operation the body names and the webhook-id's first
						// use are checked here. Parameters are read from the signed body only.
						'permission_callback' => array( $this, 'check_signed' ),
					),
					array(
						'methods'             => WP_REST_Server::READABLE,
						'callback'            => array( $this, 'protocol_1' ),
						// Public: it only answers that a GET is protocol 1, with what to do.
						'permission_callback' => '__return_true',
					),
				)
			);
		}
		register_rest_route(
			UserRelay_Facts::REST_NAMESPACE,
			'/flush',
			array(
				'methods'             => WP_REST_Server::CREATABLE,
				'callback'            => array( $this, 'flush' ),
				// Public: our own non-blocking loopback (no cookies); the token option proves it is us.
				'permission_callback' => array( $this, 'check_flush_token' ),
				'args'                => array(
					'token' => array(
						'description' => __( 'The flush token of this site.', 'userrelay' ),
						'type'        => 'string',
						'required'    => true,
					),
				),
			)
		);
	}

	/**
	 * Every answer of our routes names the protocol it speaks (rest_post_dispatch).
	 *
	 * @param WP_HTTP_Response $response The answer.
	 * @param WP_REST_Server   $server   The server.
	 * @param WP_REST_Request  $request  The request.
	 * @return WP_HTTP_Response
	 */
	public function name_protocol( $response, $server, $request ) {
		if ( $response instanceof WP_HTTP_Response && 0 === strpos( (string) $request->get_route(), '/' . UserRelay_Facts::REST_NAMESPACE . '/' ) ) {
			$response->header( UserRelay_Signature::PROTOCOL_HEADER, (string) UserRelay_Facts::PROTOCOL );
		}
		return $response;
	}

	/**
	 * The permission_callback of the signed routes: protocol, signature, operation, first use.
	 *
	 * @param WP_REST_Request $request The request.
	 * @return true|WP_Error
	 */
	public function check_signed( WP_REST_Request $request ) {
		if ( $request === $this->accepted ) {
			return true; // Checked once, and its webhook-id is spent: asking again is not a replay.
		}
		$operation = substr( (string) $request->get_route(), strlen( '/' . UserRelay_Facts::REST_NAMESPACE . '/' ) );
		if ( ! isset( self::OPERATIONS[ $operation ] ) ) {
			return new WP_Error( 'userrelay_unknown_operation', __( 'Unknown operation.', 'userrelay' ), array( 'status' => 404 ) );
		}
		$body     = (string) $request->get_body();
		$verified = UserRelay_Signature::verify(
			$this->settings->hmac_key(),
			$request->get_header( 'webhook-id' ),
			$request->get_header( 'webhook-timestamp' ),
			$request->get_header( 'webhook-signature' ),
			$body
		);
		if ( true !== $verified ) {
			// A protocol-1 relay signs with the key itself: say so rather than "wrong key".
			$protocol = UserRelay_Signature::check_protocol( $request->get_header( UserRelay_Signature::PROTOCOL_HEADER ) );
			return true === $protocol ? $verified : $protocol;
		}
		$document = UserRelay_Signature::envelope_of( $body, $operation, $this->settings->site() );
		if ( is_wp_error( $document ) ) {
			return $document;
		}
		$first = UserRelay_Replay_Guard::first_use( (string) $request->get_header( 'webhook-id' ) );
		if ( true !== $first ) {
			return $first;
		}
		$this->signed   = $document;
		$this->accepted = $request;
		return true;
	}

	/**
	 * GET on a signed route: how protocol 1 asked. Answers what to do.
	 *
	 * @param WP_REST_Request $request The request.
	 * @return WP_Error
	 */
	public function protocol_1( WP_REST_Request $request ): WP_Error {
		$offered = $request->get_header( UserRelay_Signature::PROTOCOL_HEADER );
		$error   = UserRelay_Signature::check_protocol( null === $offered || (string) UserRelay_Facts::PROTOCOL === $offered ? '1' : $offered );
		return $error instanceof WP_Error ? $error : new WP_Error( 'userrelay_protocol_version', '', array( 'status' => 400 ) );
	}

	/**
	 * An integer parameter of the signed body, within bounds; a WP_Error (400) naming it if not.
	 *
	 * @param string $name    The parameter.
	 * @param int    $default When absent.
	 * @param int    $min     Smallest allowed.
	 * @param int    $max     Largest allowed.
	 * @return int|WP_Error
	 */
	private function int_param( string $name, int $default, int $min, int $max ) {
		if ( ! array_key_exists( $name, $this->signed ) ) {
			return $default;
		}
		$value = $this->signed[ $name ];
		if ( ! is_int( $value ) || $value < $min || $value > $max ) {
			/* translators: 1: parameter name, 2: smallest, 3: largest. */
			return new WP_Error( 'userrelay_bad_param', sprintf( __( '%1$s: expected a whole number from %2$d to %3$d.', 'userrelay' ), $name, $min, $max ), array( 'status' => 400 ) );
		}
		return $value;
	}

	/**
	 * The permission_callback of the flush route.
	 *
	 * @param WP_REST_Request $request The request.
	 * @return true|WP_Error
	 */
	public function check_flush_token( WP_REST_Request $request ) {
		$token = $request->get_param( 'token' );
		if ( is_string( $token ) && hash_equals( UserRelay_Outbox::flush_token(), $token ) ) {
			return true;
		}
		return new WP_Error( 'userrelay_bad_flush_token', __( 'The flush token is wrong.', 'userrelay' ), array( 'status' => 403 ) );
	}

	/**
	 * POST /events: applies a batch, one result per event.
	 *
	 * @return WP_REST_Response|WP_Error
	 */
	public function receive_events() {
		// Read from the signed body (check_signed), never from parameters WordPress merged in.
		$events = isset( $this->signed['events'] ) ? $this->signed['events'] : null;
		if ( ! is_array( $events ) || ! wp_is_numeric_array( $events ) ) {
			return new WP_Error( 'userrelay_bad_body', __( 'Expected a signed body {"operation": "events", "site": ..., "events": [...]}.', 'userrelay' ), array( 'status' => 400 ) );
		}
		if ( function_exists( 'set_time_limit' ) ) {
			@set_time_limit( 60 ); // phpcs:ignore Generic.PHP.NoSilencedErrors.Discouraged -- May be disabled; the applier keeps to its own budget anyway.
		}
		return new WP_REST_Response( array( 'results' => $this->applier->apply_batch( $events ) ), 200 );
	}

	/**
	 * POST /ping: who we are, what we can take, our roles and our clock (the relay's connection
	 * test).
	 * With check_relay, also whether the relay accepts a ping signed here (the other way).
	 *
	 * @return WP_REST_Response
	 */
	public function ping() {
		$answer = array(
			'site'                   => $this->settings->site(),
			'wordpress'              => get_bloginfo( 'version' ),
			'plugin'                 => USERRELAY_PLUGIN_VERSION,
			'protocol'               => UserRelay_Facts::PROTOCOL,
			'hash_formats'           => UserRelay_Delivery_Checks::hash_formats(),
			'hash_formats_by_plugin' => UserRelay_Passwords::formats_by_plugin(),
			'time'                   => microtime( true ),
			'roles'                  => self::roles(),
		);
		if ( ! empty( $this->signed['check_relay'] ) ) {
			$answer['relay_check'] = ( new UserRelay_Relay_Client( $this->settings ) )->relay_check();
			if ( 200 === $answer['relay_check']['status'] && $this->outbox->count() ) {
				// The relay answers again: what waits on a backoff step is sent after this answer.
				$this->outbox->retry_now();
			}
		}
		return new WP_REST_Response( $answer, 200 );
	}

	/**
	 * Every role of this site, slug and name (the relay names a link's role a site lacks).
	 *
	 * @return array[]
	 */
	private static function roles(): array {
		$roles = array();
		foreach ( wp_roles()->get_names() as $slug => $name ) {
			$roles[] = array(
				'slug' => (string) $slug,
				'name' => translate_user_role( (string) $name ),
			);
		}
		return $roles;
	}

	/**
	 * POST /users: one page of this site's users, for the relay's initial sync.
	 *
	 * @return WP_REST_Response|WP_Error
	 */
	public function users() {
		$after = $this->int_param( 'after', 0, 0, PHP_INT_MAX );
		$limit = $this->int_param( 'limit', 200, 1, UserRelay_Directory::MAX_LIMIT );
		foreach ( array( $after, $limit ) as $value ) {
			if ( is_wp_error( $value ) ) {
				return $value;
			}
		}
		return new WP_REST_Response( ( new UserRelay_Directory( $this->settings ) )->page( $after, $limit ), 200 );
	}

	/**
	 * POST /digests: one page of per-user digests (reconciliation; see UserRelay_Digests).
	 *
	 * @return WP_REST_Response|WP_Error
	 */
	public function digests() {
		$after  = $this->int_param( 'after', 0, 0, PHP_INT_MAX );
		$limit  = $this->int_param( 'limit', 500, 1, UserRelay_Digests::MAX_LIMIT );
		$fields = isset( $this->signed['fields'] ) ? $this->signed['fields'] : 'profile,roles';
		foreach ( array( $after, $limit ) as $value ) {
			if ( is_wp_error( $value ) ) {
				return $value;
			}
		}
		if ( ! is_string( $fields ) ) {
			return new WP_Error( 'userrelay_bad_param', __( 'fields: expected a string such as "profile,roles,meta".', 'userrelay' ), array( 'status' => 400 ) );
		}
		return new WP_REST_Response( ( new UserRelay_Digests( $this->settings ) )->page( $after, $limit, $fields ), 200 );
	}

	/**
	 * POST /snapshots: full snapshots of the users whose ids the body lists ({"ids": [...]}).
	 *
	 * @return WP_REST_Response|WP_Error
	 */
	public function snapshots() {
		$ids = isset( $this->signed['ids'] ) ? $this->signed['ids'] : null;
		if ( ! is_array( $ids ) || ! wp_is_numeric_array( $ids ) ) {
			return new WP_Error( 'userrelay_bad_body', __( 'ids: expected a list of user ids.', 'userrelay' ), array( 'status' => 400 ) );
		}
		return new WP_REST_Response( array( 'users' => ( new UserRelay_Digests( $this->settings ) )->snapshots( $ids ) ), 200 );
	}

	/**
	 * POST /nudge: the relay is back (or took something after failing): send the outbox now,
	 * in the background, instead of waiting out the current backoff.
	 *
	 * @return WP_REST_Response
	 */
	public function nudge() {
		$waiting = $this->outbox->count();
		if ( $waiting ) {
			// Due now; the send itself starts after this answer, at 'shutdown' (UserRelay_Hooks).
			$this->outbox->retry_now();
		}
		return new WP_REST_Response( array( 'waiting' => $waiting ), 202 );
	}

	/**
	 * POST /flush: sends what is due, briefly, and returns. Nobody waits for this answer.
	 *
	 * @return WP_REST_Response
	 */
	public function flush() {
		ignore_user_abort( true ); // The kicking request hung up at once; carry on regardless.
		if ( function_exists( 'set_time_limit' ) ) {
			@set_time_limit( 120 ); // phpcs:ignore Generic.PHP.NoSilencedErrors.Discouraged -- May be disabled; the flush keeps to its own budget.
		}
		if ( ! $this->settings->is_configured() ) {
			$this->outbox->release_kick();
			return new WP_REST_Response( array( 'problems' => $this->settings->problems() ), 200 );
		}
		try {
			$result = $this->outbox->flush( UserRelay_Outbox::BACKGROUND_BUDGET );
		} finally {
			// Rows left due are kicked again by this request's own end (UserRelay_Hooks).
			$this->outbox->release_kick();
		}
		return new WP_REST_Response( $result, 200 );
	}
}
